//! The data folder, held by one stack at a time.

use std::fs::File;
use std::path::Path;

use super::error::StackError;

/// Held while the stack runs: a second stack on the same data folder would corrupt it.
#[derive(Debug)]
pub(super) struct DataDirLock {
    _file: File,
}

impl DataDirLock {
    /// Creates `dir` if needed and locks it, or says that another stack holds it.
    pub(super) fn acquire(dir: &Path) -> Result<Self, StackError> {
        let failed = |reason: String| StackError::DataDir {
            path: dir.to_owned(),
            reason,
        };
        std::fs::create_dir_all(dir)
            .map_err(|error| failed(format!("cannot create it: {error}")))?;
        let file = File::create(dir.join("govbus.lock"))
            .map_err(|error| failed(format!("cannot write in it: {error}")))?;
        file.try_lock().map_err(|_| {
            failed(
                "another govbus stack is running on it; stop it or choose another data_dir"
                    .to_owned(),
            )
        })?;
        Ok(Self { _file: file })
    }
}
