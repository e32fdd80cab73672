//! Complaints as a stack knows it before starting it: [`DECLARATION`].

use std::time::Duration;

use govbus_bus::Backoff;
use govbus_civil::calendar::Period;
use govbus_kit::declaration::{
    ContractSource, RunningService, Section, ServiceDeclaration, ServiceEnvironment, Setting,
    SettingKind, SettingProblem, Starting, read_settings,
};
use govbus_kit::runtime::StartError;
use govbus_proto::complaints::v1::complaints_service_server::SERVICE_NAME;
use serde::Deserialize;

use crate::app::{Application, ComplaintsConfig, NationalSettings, SERVICE, contract};
use crate::domain::Deadlines;

/// Complaints in a stack.
pub const DECLARATION: ServiceDeclaration = ServiceDeclaration {
    name: SERVICE,
    summary: "Residents' complaints about public services (pengaduan): verification, routing to \
              the agency, its response within working-day deadlines by class, escalation, and \
              forwarding to the national channel (SP4N-LAPOR)",
    grpc_services: &[SERVICE_NAME],
    calls: &["identity"],
    default_port: 50055,
    settings: &[
        Setting {
            key: "verification_working_days",
            kind: SettingKind::Integer,
            default: "3",
            doc: "Working days to verify a complaint before it is escalated",
        },
        Setting {
            key: "ringan_working_days",
            kind: SettingKind::Integer,
            default: "2",
            doc: "Working days an agency has to respond to a ringan complaint",
        },
        Setting {
            key: "normatif_working_days",
            kind: SettingKind::Integer,
            default: "5",
            doc: "Working days an agency has to respond to a normatif complaint",
        },
        Setting {
            key: "tidak_berkadar_pengawasan_working_days",
            kind: SettingKind::Integer,
            default: "14",
            doc: "Working days an agency has to respond to a complaint tidak berkadar pengawasan",
        },
        Setting {
            key: "berkadar_pengawasan_working_days",
            kind: SettingKind::Integer,
            default: "60",
            doc: "Working days an agency has to respond to a complaint berkadar pengawasan \
                  (needing investigation)",
        },
        Setting {
            key: "national_channel_url",
            kind: SettingKind::Text,
            default: "",
            doc: "Where accepted complaints are posted (the SP4N-LAPOR integration); empty: \
                  they stay in the city. https, or http to loopback only",
        },
        Setting {
            key: "national_channel_token_file",
            kind: SettingKind::Text,
            default: "",
            doc: "A file holding the bearer token the national channel expects; empty: none",
        },
        Setting {
            key: "national_channel_ca_file",
            kind: SettingKind::Text,
            default: "",
            doc: "PEM certificates of authorities trusted for the national channel besides the \
                  system's; empty: the system's only",
        },
        Setting {
            key: "national_channel_timeout",
            kind: SettingKind::Duration,
            default: "10s",
            doc: "The longest one delivery attempt to the national channel may take",
        },
        Setting {
            key: "national_channel_retry",
            kind: SettingKind::Duration,
            default: "10s",
            doc: "The first delay before a failed delivery is tried again; it doubles up to \
                  30 minutes, and after 16 deliveries the complaint is dead-lettered",
        },
        Setting {
            key: "keep_ended_texts",
            kind: SettingKind::Duration,
            default: "730d",
            doc: "How long a complaint's texts (the resident's, the reasons, the response) are kept \
                  after its handling ended; then they are erased, the references, dates and \
                  outcome kept. Set it to the agency's records-retention schedule",
        },
        Setting {
            key: "instance_name",
            kind: SettingKind::Text,
            default: "Pemerintah Kota Malang",
            doc: "The government the complaints are about, as the national channel knows it",
        },
    ],
    check_settings,
    grants: include_str!("../grants.toml"),
    contract: ContractSource::Fixed(contract),
    start,
};

/// Complaints' settings beyond its address and database.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    verification_working_days: u32,
    ringan_working_days: u32,
    normatif_working_days: u32,
    tidak_berkadar_pengawasan_working_days: u32,
    berkadar_pengawasan_working_days: u32,
    national_channel_url: String,
    national_channel_token_file: String,
    national_channel_ca_file: String,
    #[serde(with = "govbus_kit::duration")]
    national_channel_timeout: Duration,
    #[serde(with = "govbus_kit::duration")]
    national_channel_retry: Duration,
    instance_name: String,
    #[serde(with = "govbus_kit::duration")]
    keep_ended_texts: Duration,
}

impl Settings {
    fn deadlines(&self) -> Deadlines {
        Deadlines {
            verification: Period::WorkingDays(self.verification_working_days),
            ringan: Period::WorkingDays(self.ringan_working_days),
            normatif: Period::WorkingDays(self.normatif_working_days),
            tidak_berkadar_pengawasan: Period::WorkingDays(
                self.tidak_berkadar_pengawasan_working_days,
            ),
            berkadar_pengawasan: Period::WorkingDays(self.berkadar_pengawasan_working_days),
        }
    }
}

fn check_settings(section: &Section) -> Result<(), SettingProblem> {
    let settings: Settings = read_settings(section)?;
    for (key, days) in [
        (
            "verification_working_days",
            settings.verification_working_days,
        ),
        ("ringan_working_days", settings.ringan_working_days),
        ("normatif_working_days", settings.normatif_working_days),
        (
            "tidak_berkadar_pengawasan_working_days",
            settings.tidak_berkadar_pengawasan_working_days,
        ),
        (
            "berkadar_pengawasan_working_days",
            settings.berkadar_pengawasan_working_days,
        ),
    ] {
        if !(1..=365).contains(&days) {
            return Err(SettingProblem::new(key, "must be 1 to 365 working days"));
        }
    }
    SettingProblem::unless_positive(
        "national_channel_timeout",
        settings.national_channel_timeout,
    )?;
    SettingProblem::unless_positive("national_channel_retry", settings.national_channel_retry)?;
    SettingProblem::unless_positive("keep_ended_texts", settings.keep_ended_texts)?;
    if settings.instance_name.trim().is_empty() {
        return Err(SettingProblem::new("instance_name", "is required"));
    }
    if !settings.national_channel_url.is_empty() {
        govbus_kit::outbound::HttpTarget::check_url(&settings.national_channel_url)
            .map_err(|error| SettingProblem::new("national_channel_url", error.to_string()))?;
    }
    Ok(())
}

/// The national channel the settings name, with its token and authorities read from their
/// files.
fn national(settings: &Settings) -> Result<Option<NationalSettings>, StartError> {
    if settings.national_channel_url.is_empty() {
        return Ok(None);
    }
    let read = |what: &'static str, path: &str| {
        std::fs::read(path).map_err(|error| StartError::Data {
            what,
            source: format!("{path}: {error}").into(),
        })
    };
    let bearer_token = match settings.national_channel_token_file.as_str() {
        "" => None,
        path => Some(
            String::from_utf8(read("the national channel's token", path)?)
                .map_err(|_| StartError::Data {
                    what: "the national channel's token",
                    source: format!("{path} is not UTF-8 text").into(),
                })?
                .trim()
                .to_owned(),
        ),
    };
    let extra_roots_pem = match settings.national_channel_ca_file.as_str() {
        "" => None,
        path => Some(read(
            "the national channel's certificate authorities",
            path,
        )?),
    };
    Ok(Some(NationalSettings {
        url: settings.national_channel_url.clone(),
        bearer_token,
        extra_roots_pem,
        timeout: settings.national_channel_timeout,
        instance: settings.instance_name.trim().to_owned(),
        max_deliveries: 16,
        backoff: Backoff::new(
            settings.national_channel_retry,
            Duration::from_secs(30 * 60),
        ),
    }))
}

fn start(environment: ServiceEnvironment) -> Starting {
    Box::pin(async move {
        let settings: Settings = environment.settings()?;
        let identity_url = environment.peer("identity")?.to_owned();
        // Boxed: the start is a large future.
        let application = Box::pin(Application::build(ComplaintsConfig {
            database_url: environment.database_url,
            listen: environment.listen,
            identity_url,
            bus: environment.bus,
            storage: environment.storage,
            tls: environment.tls,
            access: environment.access,
            audit_subject_key: environment.audit_subject_key,
            audit_timestamps: environment.audit_timestamps,
            agencies: Some(environment.agencies),
            deadlines: settings.deadlines(),
            deadline_check_interval: Duration::from_secs(1),
            calendar: None,
            national: national(&settings)?,
            keep_ended_texts: settings.keep_ended_texts,
        }))
        .await?;
        Ok(Box::new(application) as Box<dyn RunningService>)
    })
}

govbus_kit::running_service!(Application);

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> Section {
        DECLARATION
            .settings
            .iter()
            .map(|setting| {
                let value = setting.default_value().expect("a valid default");
                (setting.key.to_owned(), value)
            })
            .collect()
    }

    #[test]
    fn the_declared_defaults_are_the_domain_defaults() {
        let settings: Settings = read_settings(&defaults()).expect("readable");
        assert_eq!(settings.deadlines(), Deadlines::default());
        assert!(national(&settings).expect("no files to read").is_none());
    }

    #[test]
    fn the_declared_deadlines_are_the_shipped_classes() {
        let shipped = include_str!("../data/classes.csv");
        let mut rows = 0;
        for line in shipped
            .lines()
            .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        {
            let (stage, days) = line.split_once(',').expect("stage,working_days");
            let key = format!("{stage}_working_days");
            let setting = DECLARATION
                .settings
                .iter()
                .find(|setting| setting.key == key)
                .unwrap_or_else(|| panic!("no setting {key}"));
            assert_eq!(setting.default, days, "{key}");
            rows += 1;
        }
        assert_eq!(rows, 5);
        assert!(shipped.starts_with("# source:"));
    }

    #[test]
    fn a_plain_http_national_channel_beyond_loopback_is_refused() {
        let mut section = defaults();
        section.insert(
            "national_channel_url".to_owned(),
            toml::Value::String("http://lapor.example/api".to_owned()),
        );
        let problem = check_settings(&section).expect_err("refused");
        assert!(
            problem.to_string().contains("national_channel_url"),
            "{problem}"
        );
        section.insert("ringan_working_days".to_owned(), toml::Value::Integer(0));
        assert!(check_settings(&section).is_err());
    }
}
