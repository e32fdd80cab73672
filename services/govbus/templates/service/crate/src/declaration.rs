//! {{Name}} as a stack knows it before starting it: [`DECLARATION`].

use govbus_kit::declaration::{
    ContractSource, RunningService, ServiceDeclaration, ServiceEnvironment, Starting, no_settings,
};
use govbus_proto::{{name}}::v1::{{name}}_service_server::SERVICE_NAME;

use crate::app::{Application, SERVICE, {{Name}}Config, contract};

/// {{Name}} in a stack.
pub const DECLARATION: ServiceDeclaration = ServiceDeclaration {
    name: SERVICE,
    summary: "Requests residents file with the {{name}} service, closed when the resident dies",
    grpc_services: &[SERVICE_NAME],
    calls: &[],
    default_port: {{port}},
    settings: &[],
    check_settings: no_settings,
    grants: include_str!("../grants.toml"),
    contract: ContractSource::Fixed(contract),
    start,
};

fn start(environment: ServiceEnvironment) -> Starting {
    Box::pin(async move {
        let application = Application::build({{Name}}Config {
            database_url: environment.database_url,
            listen: environment.listen,
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
