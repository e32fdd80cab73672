//! Identity as a stack knows it before starting it: [`DECLARATION`].

use std::time::Duration;

use govbus_kit::declaration::{
    ContractSource, RunningService, Section, ServiceDeclaration, ServiceEnvironment, Setting,
    SettingKind, SettingProblem, Starting, read_settings,
};
use govbus_proto::identity::v1::identity_service_server::SERVICE_NAME;
use serde::Deserialize;

use crate::app::{Application, IdentityConfig, SERVICE, contract};

/// Identity in a stack.
pub const DECLARATION: ServiceDeclaration = ServiceDeclaration {
    name: SERVICE,
    summary: "The population register: registers citizens, verifies them for other services, \
              records relocations and deaths",
    grpc_services: &[SERVICE_NAME],
    calls: &[],
    default_port: 50051,
    settings: &[Setting {
        key: "call_report_interval",
        kind: SettingKind::Duration,
        default: "60s",
        doc: "How often the counts of other services' calls are published (SPBE evidence)",
    }],
    check_settings,
    grants: include_str!("../grants.toml"),
    contract: ContractSource::Fixed(contract),
    start,
};

/// Identity's settings beyond its address and database.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    #[serde(with = "govbus_kit::duration")]
    call_report_interval: Duration,
}

fn check_settings(section: &Section) -> Result<(), SettingProblem> {
    let settings: Settings = read_settings(section)?;
    SettingProblem::unless_positive("call_report_interval", settings.call_report_interval)
}

fn start(environment: ServiceEnvironment) -> Starting {
    Box::pin(async move {
        let settings: Settings = environment.settings()?;
        let application = Application::build(IdentityConfig {
            database_url: environment.database_url,
            listen: environment.listen,
            bus: environment.bus,
            storage: environment.storage,
            tls: environment.tls,
            access: environment.access,
            audit_subject_key: environment.audit_subject_key,
            audit_timestamps: environment.audit_timestamps,
            call_report_interval: settings.call_report_interval,
        })
        .await?;
        Ok(Box::new(application) as Box<dyn RunningService>)
    })
}

govbus_kit::running_service!(Application);
