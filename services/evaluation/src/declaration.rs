//! Evaluation as a stack knows it before starting it: [`DECLARATION`].

use std::path::PathBuf;

use govbus_kit::declaration::{
    ContractSource, RunningService, Section, ServiceDeclaration, ServiceEnvironment, Setting,
    SettingKind, SettingProblem, Starting, read_settings,
};
use govbus_proto::evaluation::v1::evaluation_service_server::SERVICE_NAME;
use serde::Deserialize;

use crate::app::{Application, EvaluationConfig, SERVICE, contract};
use crate::connector::Membership;

/// Evaluation in a stack: its evidence is every event of every other service of the stack.
pub const DECLARATION: ServiceDeclaration = ServiceDeclaration {
    name: SERVICE,
    summary: "SPBE evaluation (PermenPANRB 59/2020): the index from indicator levels, with the \
              bus's own evidence of integration",
    grpc_services: &[SERVICE_NAME],
    calls: &[],
    default_port: 50054,
    settings: &[Setting {
        key: "instruments_dir",
        kind: SettingKind::Text,
        default: "",
        doc: "A folder of further evaluation instruments (`*.toml`) beside the shipped one; \
              empty for none",
    }],
    check_settings,
    grants: include_str!("../grants.toml"),
    contract: ContractSource::AmongOthers(contract_among),
    start,
};

/// Evaluation's settings beyond its address and database.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    instruments_dir: String,
}

impl Settings {
    fn instruments_dir(&self) -> Option<PathBuf> {
        (!self.instruments_dir.is_empty()).then(|| PathBuf::from(&self.instruments_dir))
    }
}

fn check_settings(section: &Section) -> Result<(), SettingProblem> {
    let settings: Settings = read_settings(section)?;
    if let Some(dir) = settings.instruments_dir()
        && !dir.is_dir()
    {
        return Err(SettingProblem::new(
            "instruments_dir",
            format!("{} is not a folder", dir.display()),
        ));
    }
    Ok(())
}

/// Every other service of the stack, and the gateway (the calls through it, its SPLP link).
fn evidence_services(others: &[&'static str]) -> Vec<String> {
    others
        .iter()
        .map(|other| (*other).to_owned())
        .chain([GATEWAY.to_owned()])
        .collect()
}

/// The gateway's name on the bus, whose events are evidence like a service's.
const GATEWAY: &str = "gateway";

fn contract_among(
    others: &[&'static str],
) -> Result<govbus_bus::ServiceContract, govbus_bus::AdapterError> {
    contract(&evidence_services(others))
}

fn start(environment: ServiceEnvironment) -> Starting {
    Box::pin(async move {
        let settings: Settings = environment.settings()?;
        let application = Application::build(EvaluationConfig {
            database_url: environment.database_url,
            listen: environment.listen,
            bus: environment.bus,
            storage: environment.storage,
            tls: environment.tls,
            access: environment.access,
            evidence_services: evidence_services(&environment.others),
            instruments_dir: settings.instruments_dir(),
            membership: Membership {
                agencies: environment.agencies,
                members: environment
                    .members
                    .into_iter()
                    .map(|(service, agency)| (service.to_owned(), agency))
                    .collect(),
            },
        })
        .await?;
        Ok(Box::new(application) as Box<dyn RunningService>)
    })
}

govbus_kit::running_service!(Application);
