//! Starting the services in dependency order, each stopped again when a later one fails.

use std::time::Duration;

use govbus_kit::access::AccessPolicy;
use govbus_kit::audit::SubjectKey;

use super::error::StackError;
use super::trust::Certificates;
use super::users::NatsUsers;
use crate::config::StackConfig;

pub(super) type Services = (
    govbus_identity::Application,
    govbus_welfare::Application,
    govbus_licensing::Application,
    govbus_evaluation::Application,
);

pub(super) async fn start_services(
    config: &StackConfig,
    nats_url: &str,
    users: &NatsUsers,
    certificates: Option<&Certificates>,
    access: Option<&AccessPolicy>,
    audit_subject_key: Option<&SubjectKey>,
) -> Result<Services, StackError> {
    let tls = |service: &str| match certificates {
        Some(certificates) => certificates.identity(service).map(Some),
        None => Ok(None),
    };
    let scheme = if certificates.is_some() {
        "https"
    } else {
        "http"
    };
    let bus = |service: &str| users.options(nats_url, service).wait_for_server(true);
    let failed = |service: &'static str| move |source| StackError::Service { service, source };
    let identity = govbus_identity::Application::build(govbus_identity::IdentityConfig {
        database_url: config.database_url("identity"),
        listen: config.identity.listen,
        bus: bus("identity"),
        storage: config.storage.settings(),
        tls: tls("identity")?,
        access: access.cloned(),
        audit_subject_key: audit_subject_key.cloned(),
        call_report_interval: Duration::from_secs(60),
    })
    .await
    .map_err(failed("identity"))?;
    let identity_url = format!("{scheme}://{}", identity.address());
    let rest = async {
        let welfare = govbus_welfare::Application::build(govbus_welfare::WelfareConfig {
            database_url: config.database_url("welfare"),
            listen: config.welfare.listen,
            identity_url: identity_url.clone(),
            bus: bus("welfare"),
            storage: config.storage.settings(),
            tls: tls("welfare")?,
            access: access.cloned(),
            audit_subject_key: audit_subject_key.cloned(),
        })
        .await
        .map_err(failed("welfare"))?;
        let licensing =
            match govbus_licensing::Application::build(govbus_licensing::LicensingConfig {
                database_url: config.database_url("licensing"),
                listen: config.licensing.listen,
                identity_url,
                bus: bus("licensing"),
                storage: config.storage.settings(),
                tls: tls("licensing")?,
                access: access.cloned(),
                audit_subject_key: audit_subject_key.cloned(),
                deadlines: govbus_licensing::Deadlines {
                    verification: config.licensing.verification_deadline,
                    approval: config.licensing.approval_deadline,
                },
                deadline_check_interval: Duration::from_secs(1),
            })
            .await
            {
                Ok(licensing) => licensing,
                Err(source) => {
                    welfare.stop().await;
                    return Err(failed("licensing")(source));
                }
            };
        let evaluation =
            match govbus_evaluation::Application::build(govbus_evaluation::EvaluationConfig {
                database_url: config.database_url("evaluation"),
                listen: config.evaluation.listen,
                bus: bus("evaluation"),
                storage: config.storage.settings(),
                tls: tls("evaluation")?,
                access: access.cloned(),
                evidence_services: govbus_evaluation::EvaluationConfig::default_evidence_services(),
                instruments_dir: None,
            })
            .await
            {
                Ok(evaluation) => evaluation,
                Err(source) => {
                    welfare.stop().await;
                    licensing.stop().await;
                    return Err(failed("evaluation")(source));
                }
            };
        Ok((welfare, licensing, evaluation))
    };
    match Box::pin(rest).await {
        Ok((welfare, licensing, evaluation)) => Ok((identity, welfare, licensing, evaluation)),
        Err(error) => {
            identity.stop().await;
            Err(error)
        }
    }
}
