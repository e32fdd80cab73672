//! Licensing as a stack knows it before starting it: [`DECLARATION`].

use std::time::Duration;

use govbus_kit::declaration::{
    ContractSource, RunningService, Section, ServiceDeclaration, ServiceEnvironment, Setting,
    SettingKind, SettingProblem, Starting, read_settings,
};
use govbus_proto::licensing::v1::licensing_service_server::SERVICE_NAME;
use serde::Deserialize;

use crate::app::{Application, LicensingConfig, SERVICE, contract};
use crate::domain::{Deadlines, Period};

/// Licensing in a stack.
pub const DECLARATION: ServiceDeclaration = ServiceDeclaration {
    name: SERVICE,
    summary: "Risk-based business licensing (OSS-RBA style) with service-level deadlines; \
              closes the applications of the dead",
    grpc_services: &[SERVICE_NAME],
    calls: &["identity"],
    default_port: 50053,
    settings: &[
        Setting {
            key: "verification_working_days",
            kind: SettingKind::Integer,
            default: "5",
            doc: "Working days to verify a standard certificate (menengah tinggi) before it is \
                  deemed approved (fiktif positif)",
        },
        Setting {
            key: "approval_working_days",
            kind: SettingKind::Integer,
            default: "10",
            doc: "Working days to approve a licence (tinggi) before it is deemed approved \
                  (fiktif positif)",
        },
        Setting {
            key: "keep_rejected_details",
            kind: SettingKind::Duration,
            default: "730d",
            doc: "How long a rejected application's details (the business name, the document, \
                  the reasons) are kept after its rejection; then they are erased, the \
                  references, NIB, dates and outcome kept. Set it to the agency's \
                  records-retention schedule",
        },
    ],
    check_settings,
    grants: include_str!("../grants.toml"),
    contract: ContractSource::Fixed(contract),
    start,
};

/// Licensing's settings beyond its address and database.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    verification_working_days: u32,
    approval_working_days: u32,
    #[serde(with = "govbus_kit::duration")]
    keep_rejected_details: Duration,
}

fn check_settings(section: &Section) -> Result<(), SettingProblem> {
    let settings: Settings = read_settings(section)?;
    for (key, days) in [
        (
            "verification_working_days",
            settings.verification_working_days,
        ),
        ("approval_working_days", settings.approval_working_days),
    ] {
        if !(1..=365).contains(&days) {
            return Err(SettingProblem::new(key, "must be 1 to 365 working days"));
        }
    }
    SettingProblem::unless_positive("keep_rejected_details", settings.keep_rejected_details)
}

fn start(environment: ServiceEnvironment) -> Starting {
    Box::pin(async move {
        let settings: Settings = environment.settings()?;
        let identity_url = environment.peer("identity")?.to_owned();
        let application = Application::build(LicensingConfig {
            database_url: environment.database_url,
            listen: environment.listen,
            identity_url,
            bus: environment.bus,
            storage: environment.storage,
            tls: environment.tls,
            access: environment.access,
            audit_subject_key: environment.audit_subject_key,
            audit_timestamps: environment.audit_timestamps,
            deadlines: Deadlines {
                verification: Period::WorkingDays(settings.verification_working_days),
                approval: Period::WorkingDays(settings.approval_working_days),
            },
            deadline_check_interval: Duration::from_secs(1),
            calendar: None,
            keep_rejected_details: settings.keep_rejected_details,
        })
        .await?;
        Ok(Box::new(application) as Box<dyn RunningService>)
    })
}

govbus_kit::running_service!(Application);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_declared_defaults_are_the_domain_defaults() {
        let section: Section = DECLARATION
            .settings
            .iter()
            .map(|setting| {
                let value = setting.default_value().expect("a valid default");
                (setting.key.to_owned(), value)
            })
            .collect();
        let settings: Settings = read_settings(&section).expect("readable");
        let deadlines = Deadlines::default();
        assert_eq!(
            Period::WorkingDays(settings.verification_working_days),
            deadlines.verification
        );
        assert_eq!(
            Period::WorkingDays(settings.approval_working_days),
            deadlines.approval
        );
    }
}
