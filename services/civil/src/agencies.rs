//! The instance's agencies (perangkat daerah): the members of the directory, the code list
//! complaints are routed with, the agencies SPBE indicator 18 counts;
//! shipped as data (`data/agencies.csv`, Kota Malang's, its source in `data/README.md`) or read
//! from a deployment's own file of the same form ([`Agencies::from_file`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

/// The shipped list.
const SHIPPED: &str = include_str!("../data/agencies.csv");

/// An agency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agency {
    /// Its stable code, e.g. `diskominfo`.
    pub code: String,
    /// dinas, badan, sekretariat, inspektorat, satuan, kecamatan or rumah-sakit.
    pub kind: String,
    /// Its official name.
    pub name: String,
}

/// The agencies, by code.
#[derive(Debug, Clone)]
pub struct Agencies {
    source: String,
    by_code: BTreeMap<String, Agency>,
}

/// A shipped list that cannot be read (a programming error, caught by the crate's tests).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the agencies' list, line {line}: {problem}")]
pub struct AgenciesError {
    line: usize,
    problem: String,
}

/// A list that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum AgenciesFileError {
    /// The shipped list is broken (a programming error, caught by the crate's tests).
    #[error(transparent)]
    Shipped(AgenciesError),
    /// The file cannot be read.
    #[error("cannot read the agencies' list {}: {source}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a list of agencies.
    #[error("{}: {source}", .path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, and where.
        source: AgenciesError,
    },
}

const KINDS: &[&str] = &[
    "sekretariat",
    "inspektorat",
    "dinas",
    "badan",
    "satuan",
    "rumah-sakit",
    "kecamatan",
];

impl Agencies {
    /// The shipped list, read once.
    pub fn shipped() -> Result<&'static Self, AgenciesError> {
        static SHIPPED_LIST: LazyLock<Result<Agencies, AgenciesError>> =
            LazyLock::new(|| Agencies::parse(SHIPPED));
        SHIPPED_LIST.as_ref().map_err(Clone::clone)
    }

    /// The list in `path` (a deployment's own), else the shipped one.
    pub fn configured(path: Option<&Path>) -> Result<Self, AgenciesFileError> {
        match path {
            Some(path) => Self::from_file(path),
            None => Self::shipped().cloned().map_err(AgenciesFileError::Shipped),
        }
    }

    /// The list in `path`, of the shipped list's form: a deployment's own agencies.
    pub fn from_file(path: &Path) -> Result<Self, AgenciesFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| AgenciesFileError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text).map_err(|source| AgenciesFileError::Invalid {
            path: path.to_owned(),
            source,
        })
    }

    /// Reads a list: `# source:` lines, then `code,kind,name` rows under that header.
    pub fn parse(text: &str) -> Result<Self, AgenciesError> {
        let mut source = Vec::new();
        let mut by_code = BTreeMap::new();
        let mut header = false;
        for (index, line) in text.lines().enumerate() {
            let problem = |problem: String| AgenciesError {
                line: index + 1,
                problem,
            };
            let line = line.trim();
            if let Some(comment) = line.strip_prefix('#') {
                if let Some(said) = comment.trim().strip_prefix("source:") {
                    source.push(said.trim().to_owned());
                }
                continue;
            }
            if line.is_empty() {
                continue;
            }
            if !header {
                if line != "code,kind,name" {
                    return Err(problem(format!(
                        "expected the header code,kind,name, found {line:?}"
                    )));
                }
                header = true;
                continue;
            }
            let mut fields = line.splitn(3, ',');
            let (Some(code), Some(kind), Some(name)) =
                (fields.next(), fields.next(), fields.next())
            else {
                return Err(problem("expected code,kind,name".to_owned()));
            };
            if !is_code(code) {
                return Err(problem(format!("{code:?} is not a code (a-z, 0-9, -)")));
            }
            if !KINDS.contains(&kind) {
                return Err(problem(format!("{kind:?} is not one of {KINDS:?}")));
            }
            let name = name.trim().trim_matches('"');
            if name.is_empty() {
                return Err(problem("the name is empty".to_owned()));
            }
            let agency = Agency {
                code: code.to_owned(),
                kind: kind.to_owned(),
                name: name.to_owned(),
            };
            if by_code.insert(code.to_owned(), agency).is_some() {
                return Err(problem(format!("{code:?} twice")));
            }
        }
        if by_code.is_empty() {
            return Err(AgenciesError {
                line: 0,
                problem: "no agency".to_owned(),
            });
        }
        Ok(Self {
            source: source.join(" "),
            by_code,
        })
    }

    /// The agency with `code`.
    pub fn get(&self, code: &str) -> Option<&Agency> {
        self.by_code.get(code)
    }

    /// Every agency, by code.
    pub fn iter(&self) -> impl Iterator<Item = &Agency> {
        self.by_code.values()
    }

    /// Where the list comes from.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// How many agencies there are.
    pub fn len(&self) -> usize {
        self.by_code.len()
    }

    /// Never: a list holds at least one agency.
    pub fn is_empty(&self) -> bool {
        self.by_code.is_empty()
    }
}

fn is_code(code: &str) -> bool {
    (2..=40).contains(&code.len())
        && code
            .bytes()
            .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_list_reads_and_names_its_source() {
        let agencies = Agencies::shipped().expect("the shipped list");
        assert!(!agencies.source().is_empty());
        assert!(agencies.get("diskominfo").is_some());
        assert_eq!(
            agencies
                .iter()
                .filter(|agency| agency.kind == "kecamatan")
                .count(),
            5,
            "Kota Malang has five kecamatan"
        );
    }

    #[test]
    fn bad_lists_are_refused() {
        assert!(Agencies::parse("code,kind,name\n").is_err());
        assert!(Agencies::parse("code,kind,name\nDinas,dinas,X\n").is_err());
        assert!(Agencies::parse("code,kind,name\ndinsos,kantor,X\n").is_err());
        assert!(Agencies::parse("code,kind,name\na1,dinas,X\na1,dinas,Y\n").is_err());
    }
}
