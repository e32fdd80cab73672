//! `govbus applications`: registering agencies' applications with the gateway, listing,
//! revoking them and replacing their secrets. These act on the gateway's registry directly
//! (its database, as the configuration names it), so they work whether or not the stack runs;
//! a running gateway sees a change within a second.

use std::process::ExitCode;
use std::time::Duration;

use govbus_gateway::applications::{
    ApplicationName, Applications, RateLimit, Registered, RegistryError, SignsInWith,
};

use super::{CliError, Output, say};
use crate::StackConfig;

/// Why an applications command failed.
#[derive(Debug, thiserror::Error)]
pub enum ApplicationsError {
    /// The registry refused or failed.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The registry's database cannot be opened.
    #[error("the registry of applications ({url}): {source}")]
    Open {
        /// Its URL.
        url: String,
        /// Why.
        #[source]
        source: govbus_storage::DbError,
    },
    /// The name's agency is not one of the instance's.
    #[error(
        "{agency:?} is not one of the instance's agencies; an application is named after its agency's code: {known}"
    )]
    UnknownAgency {
        /// The agency the name gives.
        agency: String,
        /// The codes of the instance's agencies.
        known: String,
    },
    /// The list of agencies cannot be read.
    #[error("the agencies' list: {0}")]
    Agencies(#[from] govbus_civil::agencies::AgenciesFileError),
    /// Printing failed.
    #[error(transparent)]
    Print(#[from] CliError),
}

impl ApplicationsError {
    /// 4 for an application that does not exist, 1 otherwise.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Self::Registry(RegistryError::Unknown(_)) => ExitCode::from(super::exit::NOT_FOUND),
            _ => ExitCode::from(super::exit::FAILED),
        }
    }
}

/// What to register.
#[derive(Debug, Clone)]
pub struct Registration {
    /// `<agency>.<application>`.
    pub name: String,
    /// What it is, for operators and the catalogue.
    pub description: String,
    /// It signs in with the identity provider's tokens: no secret.
    pub identity_provider: bool,
    /// Its own rate limit and burst, if not the gateway's default.
    pub rate: Option<(u32, u32)>,
}

async fn open(config: &StackConfig) -> Result<Applications, ApplicationsError> {
    let url = config.gateway_database_url();
    if let Some(path) = url.strip_prefix("sqlite://")
        && let Some(dir) = std::path::Path::new(path).parent()
    {
        // The first command may come before the first `govbus up`.
        let _ = std::fs::create_dir_all(dir);
    }
    govbus_gateway::database::open(&url)
        .await
        .map(Applications::new)
        .map_err(|source| ApplicationsError::Open { url, source })
}

/// The URL applications get their tokens from.
fn token_endpoint(config: &StackConfig) -> String {
    let issuer = config.gateway_url(config.gateway.listen);
    format!("{}/oauth2/token", issuer.trim_end_matches('/'))
}

/// `govbus applications register`: prints the client id and, once, the secret.
pub async fn register(
    config: &StackConfig,
    registration: Registration,
    output: Output,
) -> Result<ExitCode, ApplicationsError> {
    let name = ApplicationName::parse(&registration.name)?;
    let agencies = config.instance.agencies()?;
    if agencies.get(name.agency()).is_none() {
        return Err(ApplicationsError::UnknownAgency {
            agency: name.agency().to_owned(),
            known: agencies
                .iter()
                .map(|agency| agency.code.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    let rate = registration
        .rate
        .map(|(per_second, burst)| RateLimit::new(per_second, burst))
        .transpose()?;
    let signs_in_with = if registration.identity_provider {
        SignsInWith::IdentityProvider
    } else {
        SignsInWith::Secret
    };
    let applications = open(config).await?;
    let secret = applications
        .register(&name, &registration.description, rate, signs_in_with)
        .await;
    applications.db().close().await;
    let secret = secret?;
    let answer = serde_json::json!({
        "client_id": name.as_str(),
        "agency": name.agency(),
        "client_secret": secret.as_ref().map(|secret| secret.expose()),
        "token_endpoint": token_endpoint(config),
    });
    output.print(&answer, |_| {
        let mut text = format!(
            "Registered {name} (agency {}).\n  client_id       {name}\n",
            name.agency()
        );
        match &secret {
            Some(secret) => text.push_str(&format!(
                "  client_secret   {}\n  token endpoint  {}\n\nThe secret is shown only now: keep it in the application's secret store. \
                 Grant the application what it may call in the access policy (callers = [\"{name}\"]).",
                secret.expose(),
                token_endpoint(config)
            )),
            None => text.push_str(&format!(
                "  signs in with   the identity provider's tokens (client_id {name})\n\n\
                 Grant the application what it may call in the access policy (callers = [\"{name}\"])."
            )),
        }
        text
    })?;
    Ok(ExitCode::SUCCESS)
}

/// `govbus applications list`.
pub async fn list(config: &StackConfig, output: Output) -> Result<ExitCode, ApplicationsError> {
    let applications = open(config).await?;
    let listed = applications.list().await;
    applications.db().close().await;
    let listed = listed.map_err(RegistryError::from)?;
    output.print(&listed, |listed| render(listed))?;
    Ok(ExitCode::SUCCESS)
}

fn render(listed: &[Registered]) -> String {
    if listed.is_empty() {
        return "No applications registered (govbus applications register <agency>.<application>)."
            .to_owned();
    }
    let rows: Vec<Vec<String>> = listed
        .iter()
        .map(|application| {
            vec![
                application.name.clone(),
                application.agency.clone(),
                if application.has_secret {
                    "secret".to_owned()
                } else {
                    "identity provider".to_owned()
                },
                match (application.rate_per_second, application.burst) {
                    (Some(rate), Some(burst)) => format!("{rate}/s, {burst} at once"),
                    _ => "default".to_owned(),
                },
                application.registered_at.clone(),
                application
                    .revoked_at
                    .clone()
                    .unwrap_or_else(|| "-".to_owned()),
                application.description.clone(),
            ]
        })
        .collect();
    super::render::table(
        &[
            "NAME",
            "AGENCY",
            "SIGNS IN WITH",
            "RATE",
            "REGISTERED",
            "REVOKED",
            "DESCRIPTION",
        ],
        &rows,
    )
}

/// `govbus applications revoke`.
pub async fn revoke(config: &StackConfig, name: &str) -> Result<ExitCode, ApplicationsError> {
    let name = ApplicationName::parse(name)?;
    let applications = open(config).await?;
    let revoked = applications.revoke(&name).await;
    applications.db().close().await;
    revoked?;
    say(&format!(
        "Revoked {name}: its secrets and tokens are refused (by a running gateway within a second)."
    ))?;
    Ok(ExitCode::SUCCESS)
}

/// `govbus applications rotate-secret`.
pub async fn rotate_secret(
    config: &StackConfig,
    name: &str,
    keep_previous: Duration,
    output: Output,
) -> Result<ExitCode, ApplicationsError> {
    let name = ApplicationName::parse(name)?;
    let applications = open(config).await?;
    let secret = applications.rotate_secret(&name, keep_previous).await;
    applications.db().close().await;
    let secret = secret?;
    let answer = serde_json::json!({
        "client_id": name.as_str(),
        "client_secret": secret.expose(),
        "previous_secret_valid_for_seconds": keep_previous.as_secs(),
    });
    output.print(&answer, |_| {
        format!(
            "New secret for {name}: {}\nShown only now. The previous secret {}.",
            secret.expose(),
            if keep_previous.is_zero() {
                "is refused from now on".to_owned()
            } else {
                format!(
                    "stays valid for {}",
                    govbus_kit::duration::format(keep_previous)
                )
            }
        )
    })?;
    Ok(ExitCode::SUCCESS)
}
