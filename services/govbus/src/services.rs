//! The services `govbus up` runs. Adding a service to the stack is one line in [`SERVICES`]:
//! its configuration keys, certificate, NATS user and permissions, access grants, place in the
//! start order and evaluation's evidence all follow from its declaration.

use govbus_kit::declaration::ServiceDeclaration;

/// Every service of the stack, each declared by its own crate.
pub const SERVICES: &[&ServiceDeclaration] = &[
    &govbus_identity::DECLARATION,
    &govbus_welfare::DECLARATION,
    &govbus_licensing::DECLARATION,
    &govbus_evaluation::DECLARATION,
    &govbus_complaints::DECLARATION,
];

/// The agency each service belongs to in the directory unless configured otherwise
/// (`<service>.agency`): Kota Malang's, as the shipped list of agencies is.
const SEEDED_AGENCIES: &[(&str, &str)] = &[
    ("identity", "dispendukcapil"),
    ("welfare", "dinsos-p3ap2kb"),
    ("licensing", "disnaker-pmptsp"),
    ("evaluation", "diskominfo"),
    ("complaints", "diskominfo"),
];

/// The agency `service` belongs to unless configured otherwise (`None`: the operator's).
pub fn seeded_agency(service: &str) -> Option<&'static str> {
    SEEDED_AGENCIES
        .iter()
        .find(|(name, _)| *name == service)
        .map(|(_, agency)| *agency)
}

/// The declaration of `name`, if the stack has such a service.
pub fn declared(name: &str) -> Option<&'static ServiceDeclaration> {
    SERVICES
        .iter()
        .copied()
        .find(|declaration| declaration.name == name)
}

/// Every service's name, in the list's order.
pub fn names() -> Vec<&'static str> {
    SERVICES
        .iter()
        .map(|declaration| declaration.name)
        .collect()
}

/// The names of the services beside `name`.
pub fn others_than(name: &str) -> Vec<&'static str> {
    names().into_iter().filter(|other| *other != name).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_declaration_is_sound() {
        let mut seen = std::collections::HashSet::new();
        for declaration in SERVICES {
            assert!(seen.insert(declaration.name), "{} twice", declaration.name);
            for setting in declaration.settings {
                let default = setting.default_value().unwrap_or_else(|problem| {
                    panic!("{}.{}: {problem}", declaration.name, setting.key)
                });
                assert!(
                    !["listen", "database_url"].contains(&setting.key),
                    "{}.{} is every service's own key",
                    declaration.name,
                    setting.key
                );
                let _ = default;
            }
            let defaults: govbus_kit::declaration::Section = declaration
                .settings
                .iter()
                .map(|setting| {
                    (
                        setting.key.to_owned(),
                        setting.default_value().expect("valid"),
                    )
                })
                .collect();
            (declaration.check_settings)(&defaults)
                .unwrap_or_else(|problem| panic!("{}: {problem}", declaration.name));
            declaration
                .contract
                .among(&others_than(declaration.name))
                .unwrap_or_else(|error| panic!("{}: {error}", declaration.name));
            toml::from_str::<toml::Table>(declaration.grants)
                .unwrap_or_else(|error| panic!("{}'s grants: {error}", declaration.name));
        }
        govbus_kit::declaration::start_order(SERVICES).expect("an order to start them in");
    }

    #[test]
    fn seeded_agencies_are_agencies_of_the_shipped_list() {
        let agencies = govbus_civil::agencies::Agencies::shipped().expect("the list");
        for (service, agency) in SEEDED_AGENCIES {
            assert!(declared(service).is_some(), "{service} is not a service");
            assert!(agencies.get(agency).is_some(), "{agency} is not an agency");
        }
    }
}
