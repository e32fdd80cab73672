//! A service binary's bus connection, from its environment.
//!
//! | variable | meaning |
//! | --- | --- |
//! | `GOVBUS_NATS_URL` (required) | the NATS server(s), comma-separated (every member of a cluster) |
//! | `GOVBUS_NATS_CREDENTIALS` | a `.creds` file (user JWT and NKey seed) |
//! | `GOVBUS_NATS_NKEY_SEED_FILE` | a file holding the service's NKey seed (`SU…`) |
//! | `GOVBUS_NATS_USER`, `GOVBUS_NATS_PASSWORD` | a user name and password |
//! | `GOVBUS_NATS_CA` | CA certificates (PEM) to trust; TLS is then required |
//! | `GOVBUS_NATS_CERT`, `GOVBUS_NATS_KEY` | the client certificate and key for mutual TLS |
//! | `GOVBUS_STREAM_REPLICAS` | copies of each stream the service creates: 1 (default), 3 or 5 |
//!
//! At most one kind of credentials may be set. A service with credentials uses its own reply
//! prefix (`_INBOX_<service>`), as the permissions govbus generates expect.

use std::path::PathBuf;

use govbus_bus::{BusOptions, permissions};

/// A setting in the environment that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum BusEnvError {
    /// A required variable is not set.
    #[error("{0} is not set: give the NATS server URL(s) (JetStream, 2.10 or later)")]
    Missing(&'static str),
    /// A variable's value is not one the setting takes.
    #[error("{name}={value:?}: {expected}")]
    Invalid {
        /// The variable.
        name: &'static str,
        /// Its value.
        value: String,
        /// What it should be.
        expected: &'static str,
    },
    /// Variables that exclude each other, or one without its partner.
    #[error("{0}")]
    Conflict(String),
    /// A file named by a variable cannot be read.
    #[error("{name}: cannot read {path}: {source}")]
    File {
        /// The variable.
        name: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// The bus options of `service` from the process environment.
pub fn bus_options_from_env(service: &str) -> Result<BusOptions, BusEnvError> {
    bus_options_from(service, |name| std::env::var(name).ok())
}

/// The bus options of `service` from the variables `lookup` finds (see the module docs).
pub fn bus_options_from(
    service: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<BusOptions, BusEnvError> {
    let get = |name: &str| lookup(name).filter(|value| !value.trim().is_empty());
    let url = get("GOVBUS_NATS_URL").ok_or(BusEnvError::Missing("GOVBUS_NATS_URL"))?;
    let mut options = BusOptions::new(url)
        .client_name(service)
        .wait_for_server(true);

    let credentials_file = get("GOVBUS_NATS_CREDENTIALS");
    let seed_file = get("GOVBUS_NATS_NKEY_SEED_FILE");
    let user = get("GOVBUS_NATS_USER");
    let password = get("GOVBUS_NATS_PASSWORD");
    let kinds = [
        credentials_file.is_some(),
        seed_file.is_some(),
        user.is_some(),
    ];
    if kinds.iter().filter(|set| **set).count() > 1 {
        return Err(BusEnvError::Conflict(
            "set only one of GOVBUS_NATS_CREDENTIALS, GOVBUS_NATS_NKEY_SEED_FILE and \
             GOVBUS_NATS_USER"
                .to_owned(),
        ));
    }
    if user.is_some() != password.is_some() {
        return Err(BusEnvError::Conflict(
            "GOVBUS_NATS_USER and GOVBUS_NATS_PASSWORD go together".to_owned(),
        ));
    }
    if let Some(path) = credentials_file {
        let path = PathBuf::from(path);
        // Read now so a wrong path fails at start with the variable's name, not at connect.
        std::fs::metadata(&path).map_err(|source| BusEnvError::File {
            name: "GOVBUS_NATS_CREDENTIALS",
            path: path.clone(),
            source,
        })?;
        options = options.credentials_file(path);
    } else if let Some(path) = seed_file {
        let path = PathBuf::from(path);
        let seed = std::fs::read_to_string(&path).map_err(|source| BusEnvError::File {
            name: "GOVBUS_NATS_NKEY_SEED_FILE",
            path: path.clone(),
            source,
        })?;
        let seed = seed.trim();
        if !seed.starts_with("SU") {
            return Err(BusEnvError::Invalid {
                name: "GOVBUS_NATS_NKEY_SEED_FILE",
                value: path.display().to_string(),
                expected: "the file must hold a user NKey seed (starting with SU)",
            });
        }
        options = options.nkey_seed(seed);
    } else if let (Some(user), Some(password)) = (user, password) {
        options = options.user_password(user, password);
    }
    if kinds.contains(&true) {
        options = options.inbox_prefix(permissions::inbox_prefix(service));
    }

    if let Some(ca) = get("GOVBUS_NATS_CA") {
        options = options.root_certificates(ca);
    }
    match (get("GOVBUS_NATS_CERT"), get("GOVBUS_NATS_KEY")) {
        (Some(cert), Some(key)) => options = options.client_certificate(cert, key),
        (None, None) => {}
        _ => {
            return Err(BusEnvError::Conflict(
                "GOVBUS_NATS_CERT and GOVBUS_NATS_KEY go together".to_owned(),
            ));
        }
    }

    if let Some(value) = get("GOVBUS_STREAM_REPLICAS") {
        let replicas = match value.trim() {
            "1" => 1,
            "3" => 3,
            "5" => 5,
            _ => {
                return Err(BusEnvError::Invalid {
                    name: "GOVBUS_STREAM_REPLICAS",
                    value,
                    expected: "1, 3 or 5 (at most the number of servers in the cluster)",
                });
            }
        };
        options = options.stream_replicas(replicas);
    }
    Ok(options)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn options(variables: &[(&str, &str)]) -> Result<BusOptions, BusEnvError> {
        let variables: HashMap<String, String> = variables
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect();
        bus_options_from("welfare", move |name| variables.get(name).cloned())
    }

    #[test]
    fn takes_servers_replicas_and_a_password() {
        let options = options(&[
            (
                "GOVBUS_NATS_URL",
                "nats://10.0.0.1:4222,nats://10.0.0.2:4222",
            ),
            ("GOVBUS_STREAM_REPLICAS", "3"),
            ("GOVBUS_NATS_USER", "welfare"),
            ("GOVBUS_NATS_PASSWORD", "secret"),
        ])
        .expect("valid settings");
        assert_eq!(options.configured_stream_settings().replicas, 3);
        let debug = format!("{options:?}");
        assert!(debug.contains("nats://10.0.0.2:4222"), "{debug}");
        assert!(debug.contains("_INBOX_welfare"), "{debug}");
        assert!(!debug.contains("secret"), "the password leaks: {debug}");
    }

    #[test]
    fn defaults_to_one_replica_and_the_shared_inbox() {
        let options = options(&[("GOVBUS_NATS_URL", "nats://127.0.0.1:4222")]).expect("valid");
        assert_eq!(options.configured_stream_settings().replicas, 1);
        assert!(!format!("{options:?}").contains("_INBOX_welfare"));
    }

    #[test]
    fn refuses_what_cannot_work() {
        let url = ("GOVBUS_NATS_URL", "nats://127.0.0.1:4222");
        assert!(matches!(options(&[]), Err(BusEnvError::Missing(_))));
        for replicas in ["2", "0", "three"] {
            let error = options(&[url, ("GOVBUS_STREAM_REPLICAS", replicas)])
                .expect_err("invalid replicas");
            assert!(error.to_string().contains("1, 3 or 5"), "{error}");
        }
        assert!(matches!(
            options(&[url, ("GOVBUS_NATS_USER", "welfare")]),
            Err(BusEnvError::Conflict(_))
        ));
        assert!(matches!(
            options(&[
                url,
                ("GOVBUS_NATS_USER", "welfare"),
                ("GOVBUS_NATS_PASSWORD", "p"),
                ("GOVBUS_NATS_CREDENTIALS", "/x.creds"),
            ]),
            Err(BusEnvError::Conflict(_))
        ));
        assert!(matches!(
            options(&[url, ("GOVBUS_NATS_CERT", "/cert.pem")]),
            Err(BusEnvError::Conflict(_))
        ));
        assert!(matches!(
            options(&[url, ("GOVBUS_NATS_CREDENTIALS", "/no/such/file.creds")]),
            Err(BusEnvError::File { .. })
        ));
    }

    #[test]
    fn reads_an_nkey_seed_from_its_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let seed = dir.path().join("welfare.nk");
        std::fs::write(&seed, "not a seed\n").expect("write");
        let url = ("GOVBUS_NATS_URL", "nats://127.0.0.1:4222");
        let path = seed.display().to_string();
        assert!(matches!(
            options(&[url, ("GOVBUS_NATS_NKEY_SEED_FILE", &path)]),
            Err(BusEnvError::Invalid { .. })
        ));
        std::fs::write(&seed, "SUAEXAMPLESEED\n").expect("write");
        let options = options(&[url, ("GOVBUS_NATS_NKEY_SEED_FILE", &path)]).expect("valid");
        assert!(!format!("{options:?}").contains("SUAEXAMPLESEED"));
    }
}
