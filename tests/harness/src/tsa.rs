//! A real RFC 3161 time-stamping authority for tests: `openssl ts -reply` with a test TSA
//! certificate (issued by a test CA made at start, with the `timeStamping` extended key usage),
//! behind a small HTTP endpoint on a loopback port the kernel picks (openssl is not a server).
//! Each `POST` of an `application/timestamp-query` is answered with openssl's
//! `application/timestamp-reply`. The endpoint stops, and its folder goes, on drop.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;

use tempfile::TempDir;

use crate::HarnessError;

/// The largest query taken (a query is about 60 bytes).
const MAX_QUERY_BYTES: usize = 16 * 1024;

/// The TSA's openssl configuration; `{dir}` is its folder.
const CONFIG: &str = "\
[ tsa ]
default_tsa = govbus_test_tsa

[ govbus_test_tsa ]
dir = {dir}
serial = $dir/serial
crypto_device = builtin
signer_cert = $dir/tsa.pem
certs = $dir/ca.pem
signer_key = $dir/tsa-key.pem
signer_digest = sha256
default_policy = 1.3.6.1.4.1.99999.1
digests = sha256, sha384, sha512
accuracy = secs:1
ordering = yes
tsa_name = yes
ess_cert_id_chain = no
ess_cert_id_alg = sha256
";

/// The extensions of the TSA's certificate.
const TSA_EXTENSIONS: &str = "\
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = critical, timeStamping
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
";

/// A running time-stamping authority.
#[derive(Debug)]
pub struct TimestampAuthority {
    address: SocketAddr,
    dir: TempDir,
    stop: Arc<AtomicBool>,
    answered: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl TimestampAuthority {
    /// Makes a test CA and TSA certificate with `openssl` and serves on a loopback port.
    pub fn start() -> Result<Self, HarnessError> {
        let dir = tempfile::Builder::new()
            .prefix("govbus-tsa-")
            .tempdir()
            .map_err(HarnessError::io("creating the TSA's folder"))?;
        let path = dir.path();
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        openssl(
            path,
            &[
                &["req", "-x509"][..],
                &ec,
                &[
                    "-keyout",
                    "ca-key.pem",
                    "-out",
                    "ca.pem",
                    "-days",
                    "3650",
                    "-subj",
                    "/CN=govbus test TSA CA",
                    "-addext",
                    "basicConstraints=critical,CA:TRUE",
                    "-addext",
                    "keyUsage=critical,keyCertSign,cRLSign",
                ],
            ]
            .concat(),
        )?;
        openssl(
            path,
            &[
                &["req", "-new"][..],
                &ec,
                &[
                    "-keyout",
                    "tsa-key.pem",
                    "-out",
                    "tsa.csr",
                    "-subj",
                    "/CN=govbus test TSA",
                ],
            ]
            .concat(),
        )?;
        std::fs::write(path.join("tsa.ext"), TSA_EXTENSIONS)
            .map_err(HarnessError::io("writing the TSA's extensions"))?;
        openssl(
            path,
            &[
                "x509",
                "-req",
                "-in",
                "tsa.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca-key.pem",
                "-CAcreateserial",
                "-days",
                "3650",
                "-extfile",
                "tsa.ext",
                "-out",
                "tsa.pem",
            ],
        )?;
        std::fs::write(path.join("serial"), "01\n")
            .map_err(HarnessError::io("writing the TSA's serial"))?;
        std::fs::write(
            path.join("tsa.cnf"),
            CONFIG.replace("{dir}", &path.display().to_string()),
        )
        .map_err(HarnessError::io("writing the TSA's configuration"))?;
        let listener = TcpListener::bind("127.0.0.1:0")
            .map_err(HarnessError::io("binding the TSA's endpoint"))?;
        let address = listener
            .local_addr()
            .map_err(HarnessError::io("reading the TSA's address"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let answered = Arc::new(AtomicU64::new(0));
        let thread = {
            let (stop, answered, dir) = (Arc::clone(&stop), Arc::clone(&answered), path.to_owned());
            std::thread::spawn(move || serve(&listener, &dir, &stop, &answered))
        };
        Ok(Self {
            address,
            dir,
            stop,
            answered,
            thread: Some(thread),
        })
    }

    /// Where to `POST` queries.
    pub fn url(&self) -> String {
        format!("http://{}/", self.address)
    }

    /// The CA that issued the TSA's certificate (PEM file), what a verifier trusts.
    pub fn ca_path(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// The TSA's own certificate (PEM file).
    pub fn certificate_path(&self) -> PathBuf {
        self.dir.path().join("tsa.pem")
    }

    /// What `openssl ts -verify` says of `token` (DER) over `data`, against this authority's
    /// CA: `Ok` with its output when it says `Verification: OK`.
    pub fn openssl_verify(&self, token: &[u8], data: &[u8]) -> Result<String, String> {
        let dir = tempfile::tempdir().map_err(|error| error.to_string())?;
        let (token_file, data_file) = (dir.path().join("token.der"), dir.path().join("data"));
        std::fs::write(&token_file, token).map_err(|error| error.to_string())?;
        std::fs::write(&data_file, data).map_err(|error| error.to_string())?;
        let output = Command::new("openssl")
            .args(["ts", "-verify", "-token_in", "-in"])
            .arg(&token_file)
            .arg("-data")
            .arg(&data_file)
            .arg("-CAfile")
            .arg(self.ca_path())
            .arg("-untrusted")
            .arg(self.certificate_path())
            .output()
            .map_err(|error| format!("running openssl: {error}"))?;
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        if output.status.success() && said.contains("Verification: OK") {
            Ok(said)
        } else {
            Err(said)
        }
    }

    /// How many queries it answered with a token.
    pub fn answered(&self) -> u64 {
        self.answered.load(Ordering::Acquire)
    }
}

impl Drop for TimestampAuthority {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Wakes the accepting thread.
        let _ = TcpStream::connect(self.address);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn openssl(dir: &Path, arguments: &[&str]) -> Result<(), HarnessError> {
    let output = Command::new("openssl")
        .args(arguments)
        .current_dir(dir)
        .output()
        .map_err(HarnessError::io("running openssl (Debian package openssl)"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(HarnessError::Tsa(format!(
            "openssl {}: {}",
            arguments.join(" "),
            String::from_utf8_lossy(&output.stderr)
        )))
    }
}

fn serve(listener: &TcpListener, dir: &Path, stop: &AtomicBool, answered: &AtomicU64) {
    let mut served = 0_u64;
    for connection in listener.incoming() {
        if stop.load(Ordering::Acquire) {
            return;
        }
        let Ok(connection) = connection else {
            continue;
        };
        served += 1;
        let (status, content_type, body) = match answer(&connection, dir, served) {
            Ok(reply) => {
                answered.fetch_add(1, Ordering::AcqRel);
                ("200 OK", "application/timestamp-reply", reply)
            }
            Err(problem) => ("400 Bad Request", "text/plain", problem.into_bytes()),
        };
        let mut connection = connection;
        let head = format!(
            "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        );
        let _ = connection.write_all(head.as_bytes());
        let _ = connection.write_all(&body);
    }
}

/// Reads one `POST` and answers its query through `openssl ts -reply`.
fn answer(connection: &TcpStream, dir: &Path, served: u64) -> Result<Vec<u8>, String> {
    let mut reader = BufReader::new(connection);
    let mut request_line = String::new();
    reader
        .read_line(&mut request_line)
        .map_err(|error| error.to_string())?;
    if !request_line.starts_with("POST ") {
        return Err(format!("a query is POSTed, not {}", request_line.trim()));
    }
    let mut length = None;
    let mut media = String::new();
    loop {
        let mut line = String::new();
        reader
            .read_line(&mut line)
            .map_err(|error| error.to_string())?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse::<usize>().ok();
            } else if name.eq_ignore_ascii_case("content-type") {
                media = value.trim().to_owned();
            }
        }
    }
    if media != "application/timestamp-query" {
        return Err(format!(
            "content-type {media:?}, not application/timestamp-query"
        ));
    }
    let length = length
        .filter(|length| *length <= MAX_QUERY_BYTES)
        .ok_or("no content-length, or too long")?;
    let mut query = vec![0; length];
    reader
        .read_exact(&mut query)
        .map_err(|error| error.to_string())?;
    let query_file = dir.join(format!("query-{served}.der"));
    let reply_file = dir.join(format!("reply-{served}.der"));
    std::fs::write(&query_file, &query).map_err(|error| error.to_string())?;
    let output = Command::new("openssl")
        .args(["ts", "-reply", "-config"])
        .arg(dir.join("tsa.cnf"))
        .arg("-queryfile")
        .arg(&query_file)
        .arg("-out")
        .arg(&reply_file)
        .output()
        .map_err(|error| error.to_string())?;
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).into_owned());
    }
    std::fs::read(&reply_file).map_err(|error| error.to_string())
}
