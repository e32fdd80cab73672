//! Welfare as a stack knows it before starting it: [`DECLARATION`].

use govbus_kit::declaration::{
    ContractSource, RunningService, ServiceDeclaration, ServiceEnvironment, Starting, no_settings,
};
use govbus_proto::welfare::v1::welfare_service_server::SERVICE_NAME;

use crate::app::{Application, SERVICE, WelfareConfig, contract};

/// Welfare in a stack.
pub const DECLARATION: ServiceDeclaration = ServiceDeclaration {
    name: SERVICE,
    summary: "Social welfare: households, welfare deciles and social-assistance programmes; \
              suspends the benefits of the dead",
    grpc_services: &[SERVICE_NAME],
    calls: &["identity"],
    default_port: 50052,
    settings: &[],
    check_settings: no_settings,
    grants: include_str!("../grants.toml"),
    contract: ContractSource::Fixed(contract),
    start,
};

fn start(environment: ServiceEnvironment) -> Starting {
    Box::pin(async move {
        let identity_url = environment.peer("identity")?.to_owned();
        let application = Application::build(WelfareConfig {
            database_url: environment.database_url,
            listen: environment.listen,
            identity_url,
            bus: environment.bus,
            storage: environment.storage,
            tls: environment.tls,
            access: environment.access,
            audit_subject_key: environment.audit_subject_key,
            audit_timestamps: environment.audit_timestamps,
        })
        .await?;
        Ok(Box::new(application) as Box<dyn RunningService>)
    })
}

govbus_kit::running_service!(Application);
