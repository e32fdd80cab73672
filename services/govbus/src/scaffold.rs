//! `govbus new service <name>`: a complete, compiling service in the workspace, from the
//! templates in `services/govbus/templates/service`: its contracts (a command RPC, a read, two
//! events), its crate (declaration, store with migrations for SQLite and PostgreSQL, a command
//! through the outbox with its idempotency key, a consumer of identity's events with the inbox,
//! validation with field details, its binary), its tests against a real nats-server and both
//! databases, and its grants. Two existing files change: the one list of services and the
//! command's dependencies; `govbus up` then runs it.

use std::fmt;
use std::path::{Path, PathBuf};

/// Names a service may not take: the bus's, the workspace's and the stack's own (its
/// configuration sections among them).
const RESERVED: &[&str] = &[
    "audit",
    "bus",
    "civil",
    "console",
    "deadletter",
    "govbus",
    "harness",
    "kit",
    "nats",
    "natsd",
    "operator",
    "proto",
    "storage",
    "telemetry",
    "tls",
];

/// Each template and where it goes (`{{name}}` is the service's name).
const TEMPLATES: &[(&str, &str)] = &[
    (
        "proto/govbus/{{name}}/v1/{{name}}.proto",
        include_str!("../templates/service/proto/service.proto"),
    ),
    (
        "proto/govbus/{{name}}/v1/events.proto",
        include_str!("../templates/service/proto/events.proto"),
    ),
    (
        "services/{{name}}/Cargo.toml",
        include_str!("../templates/service/crate/Cargo.toml"),
    ),
    (
        "services/{{name}}/grants.toml",
        include_str!("../templates/service/crate/grants.toml"),
    ),
    (
        "services/{{name}}/src/lib.rs",
        include_str!("../templates/service/crate/src/lib.rs"),
    ),
    (
        "services/{{name}}/src/app.rs",
        include_str!("../templates/service/crate/src/app.rs"),
    ),
    (
        "services/{{name}}/src/declaration.rs",
        include_str!("../templates/service/crate/src/declaration.rs"),
    ),
    (
        "services/{{name}}/src/store.rs",
        include_str!("../templates/service/crate/src/store.rs"),
    ),
    (
        "services/{{name}}/src/office.rs",
        include_str!("../templates/service/crate/src/office.rs"),
    ),
    (
        "services/{{name}}/src/grpc.rs",
        include_str!("../templates/service/crate/src/grpc.rs"),
    ),
    (
        "services/{{name}}/src/main.rs",
        include_str!("../templates/service/crate/src/main.rs"),
    ),
    (
        "services/{{name}}/tests/{{name}}.rs",
        include_str!("../templates/service/crate/tests/service.rs"),
    ),
];

/// The list of services, which gets the new one.
const SERVICES_LIST: &str = "services/govbus/src/services.rs";
/// The command's manifest, which depends on every service.
const COMMAND_MANIFEST: &str = "services/govbus/Cargo.toml";

/// Why no service was made.
#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    /// The name cannot be a service's.
    #[error("{name:?} cannot name a service: {reason}")]
    Name {
        /// The name asked for.
        name: String,
        /// Why not.
        reason: String,
    },
    /// The folder is not a govbus workspace.
    #[error(
        "{0} is not a govbus workspace (no {SERVICES_LIST}); run this in one or pass --workspace"
    )]
    NotAWorkspace(PathBuf),
    /// A file it would write is there already.
    #[error("{0} exists already; the service is not made twice")]
    Exists(PathBuf),
    /// A file it edits does not look as expected.
    #[error("{path}: {reason}")]
    Unexpected {
        /// The file.
        path: PathBuf,
        /// What is missing.
        reason: String,
    },
    /// Reading or writing failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// What the scaffold wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scaffolded {
    /// The service's name.
    pub name: String,
    /// Its gRPC port in `govbus up`.
    pub port: u16,
    /// The files it made, relative to the workspace.
    pub created: Vec<PathBuf>,
    /// The existing files it changed.
    pub changed: Vec<PathBuf>,
}

impl fmt::Display for Scaffolded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "Made the {} service (gRPC port {}):",
            self.name, self.port
        )?;
        for path in &self.created {
            writeln!(f, "  new      {}", path.display())?;
        }
        for path in &self.changed {
            writeln!(f, "  changed  {}", path.display())?;
        }
        write!(
            f,
            "Next: cargo test -p govbus-{} (its tests), then `govbus up` runs it; \
             docs/adding-an-adapter.md says what to change.",
            self.name
        )
    }
}

/// The workspace `start` is in: the first folder upwards holding the list of services.
pub fn find_workspace(start: &Path) -> Result<PathBuf, ScaffoldError> {
    start
        .ancestors()
        .find(|dir| dir.join(SERVICES_LIST).is_file())
        .map(Path::to_path_buf)
        .ok_or_else(|| ScaffoldError::NotAWorkspace(start.to_owned()))
}

/// Makes the service `name` in `workspace`.
pub fn new_service(workspace: &Path, name: &str) -> Result<Scaffolded, ScaffoldError> {
    check_name(workspace, name)?;
    let port = next_port(workspace)?;
    let fill = |text: &str| {
        text.replace("{{name}}", name)
            .replace("{{Name}}", &pascal(name))
            .replace("{{NAME}}", &name.to_ascii_uppercase())
            .replace("{{port}}", &port.to_string())
    };
    let files: Vec<(PathBuf, String)> = TEMPLATES
        .iter()
        .map(|(path, template)| (PathBuf::from(fill(path)), fill(template)))
        .collect();
    if let Some((path, _)) = files.iter().find(|(path, _)| workspace.join(path).exists()) {
        return Err(ScaffoldError::Exists(path.clone()));
    }
    let list = edited_list(workspace, name)?;
    let manifest = edited_manifest(workspace, name)?;
    for (path, text) in &files {
        let full = workspace.join(path);
        if let Some(parent) = full.parent() {
            std::fs::create_dir_all(parent).map_err(|source| ScaffoldError::Io {
                path: parent.to_owned(),
                source,
            })?;
        }
        write(&full, text)?;
    }
    write(&workspace.join(SERVICES_LIST), &list)?;
    write(&workspace.join(COMMAND_MANIFEST), &manifest)?;
    Ok(Scaffolded {
        name: name.to_owned(),
        port,
        created: files.into_iter().map(|(path, _)| path).collect(),
        changed: vec![
            PathBuf::from(SERVICES_LIST),
            PathBuf::from(COMMAND_MANIFEST),
        ],
    })
}

fn check_name(workspace: &Path, name: &str) -> Result<(), ScaffoldError> {
    let refuse = |reason: &str| ScaffoldError::Name {
        name: name.to_owned(),
        reason: reason.to_owned(),
    };
    let well_formed = (3..=30).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if !well_formed {
        return Err(refuse(
            "write 3 to 30 lowercase letters and digits, starting with a letter (it names a \
             protobuf package, a crate, a NATS subject and a configuration section)",
        ));
    }
    if RESERVED.contains(&name) {
        return Err(refuse("the bus or the stack uses it already"));
    }
    if workspace.join("services").join(name).exists()
        || workspace.join("proto/govbus").join(name).exists()
    {
        return Err(refuse("a service or contract of that name exists"));
    }
    Ok(())
}

/// One past the highest default port any service of the workspace declares.
fn next_port(workspace: &Path) -> Result<u16, ScaffoldError> {
    let services = workspace.join("services");
    let entries = std::fs::read_dir(&services).map_err(|source| ScaffoldError::Io {
        path: services.clone(),
        source,
    })?;
    let mut highest = 50050;
    for entry in entries.flatten() {
        let declaration = entry.path().join("src/declaration.rs");
        let Ok(text) = std::fs::read_to_string(&declaration) else {
            continue;
        };
        for line in text.lines() {
            if let Some(port) = line
                .trim()
                .strip_prefix("default_port:")
                .and_then(|rest| rest.trim().trim_end_matches(',').parse::<u16>().ok())
            {
                highest = highest.max(port);
            }
        }
    }
    Ok(highest.saturating_add(1))
}

/// The list of services with `name`'s declaration added at its end.
fn edited_list(workspace: &Path, name: &str) -> Result<String, ScaffoldError> {
    let path = workspace.join(SERVICES_LIST);
    let text = read(&path)?;
    let unexpected = |reason: &str| ScaffoldError::Unexpected {
        path: PathBuf::from(SERVICES_LIST),
        reason: reason.to_owned(),
    };
    let start = text
        .find("pub const SERVICES")
        .ok_or_else(|| unexpected("no `pub const SERVICES` list"))?;
    let end = text[start..]
        .find("\n];")
        .map(|offset| start + offset + 1)
        .ok_or_else(|| unexpected("the SERVICES list does not end with `];` on a line"))?;
    Ok(format!(
        "{}    &govbus_{name}::DECLARATION,\n{}",
        &text[..end],
        &text[end..]
    ))
}

/// The command's manifest with a dependency on the new crate.
fn edited_manifest(workspace: &Path, name: &str) -> Result<String, ScaffoldError> {
    let path = workspace.join(COMMAND_MANIFEST);
    let text = read(&path)?;
    let heading = "[dependencies]\n";
    let at = text
        .find(heading)
        .map(|offset| offset + heading.len())
        .ok_or_else(|| ScaffoldError::Unexpected {
            path: PathBuf::from(COMMAND_MANIFEST),
            reason: "no [dependencies] table".to_owned(),
        })?;
    Ok(format!(
        "{}govbus-{name} = {{ path = \"../{name}\" }}\n{}",
        &text[..at],
        &text[at..]
    ))
}

/// `parcel` → `Parcel`.
fn pascal(name: &str) -> String {
    let mut chars = name.chars();
    chars
        .next()
        .map(|first| first.to_ascii_uppercase().to_string() + chars.as_str())
        .unwrap_or_default()
}

fn read(path: &Path) -> Result<String, ScaffoldError> {
    std::fs::read_to_string(path).map_err(|source| ScaffoldError::Io {
        path: path.to_owned(),
        source,
    })
}

fn write(path: &Path, text: &str) -> Result<(), ScaffoldError> {
    std::fs::write(path, text).map_err(|source| ScaffoldError::Io {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A workspace with only what the scaffold reads and edits.
    fn workspace() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path();
        std::fs::create_dir_all(root.join("services/govbus/src")).expect("dirs");
        std::fs::create_dir_all(root.join("services/identity/src")).expect("dirs");
        std::fs::write(
            root.join(SERVICES_LIST),
            "pub const SERVICES: &[&ServiceDeclaration] = &[\n    &govbus_identity::DECLARATION,\n];\n",
        )
        .expect("list");
        std::fs::write(
            root.join(COMMAND_MANIFEST),
            "[package]\nname = \"govbus\"\n\n[dependencies]\nanyhow = \"1\"\n",
        )
        .expect("manifest");
        std::fs::write(
            root.join("services/identity/src/declaration.rs"),
            "    default_port: 50054,\n",
        )
        .expect("declaration");
        dir
    }

    #[test]
    fn a_service_is_its_files_and_one_line_in_two_files() {
        let dir = workspace();
        let made = new_service(dir.path(), "parcel").expect("made");
        assert_eq!(made.port, 50055);
        assert_eq!(made.changed.len(), 2);
        let list = std::fs::read_to_string(dir.path().join(SERVICES_LIST)).expect("list");
        assert!(
            list.contains(
                "    &govbus_identity::DECLARATION,\n    &govbus_parcel::DECLARATION,\n];"
            ),
            "{list}"
        );
        let manifest =
            std::fs::read_to_string(dir.path().join(COMMAND_MANIFEST)).expect("manifest");
        assert!(
            manifest.contains("govbus-parcel = { path = \"../parcel\" }"),
            "{manifest}"
        );
        for path in &made.created {
            let text = std::fs::read_to_string(dir.path().join(path)).expect("made");
            assert!(
                !text.contains("{{"),
                "{} keeps a placeholder",
                path.display()
            );
        }
        let app =
            std::fs::read_to_string(dir.path().join("services/parcel/src/app.rs")).expect("app");
        assert!(app.contains("pub struct ParcelConfig"), "{app}");
        let error = new_service(dir.path(), "parcel").expect_err("twice");
        assert!(error.to_string().contains("exists"), "{error}");
    }

    #[test]
    fn names_that_cannot_be_a_service_are_refused_with_the_reason() {
        let dir = workspace();
        for name in [
            "Parcel",
            "pa",
            "parcel-post",
            "9lives",
            "console",
            "identity",
        ] {
            let error = new_service(dir.path(), name).expect_err(name);
            assert!(
                matches!(error, ScaffoldError::Name { .. }),
                "{name}: {error}"
            );
        }
    }
}
