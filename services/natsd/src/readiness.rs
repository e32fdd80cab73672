//! Telling when a nats-server is ready: its ports file, then its `/healthz` endpoint.

use std::fs;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Child;
use std::thread;
use std::time::{Duration, Instant};

/// Reads `nats-server_<pid>.ports`, a JSON document listing `nats://` and `http://` URLs.
pub fn read_ports_file(dir: &Path) -> Option<(u16, u16)> {
    let entry = fs::read_dir(dir).ok()?.flatten().find(|entry| {
        entry
            .file_name()
            .to_str()
            .is_some_and(|name| name.ends_with(".ports"))
    })?;
    let text = fs::read_to_string(entry.path()).ok()?;
    Some((url_port(&text, "nats://")?, url_port(&text, "http://")?))
}

fn url_port(text: &str, scheme: &str) -> Option<u16> {
    let rest = &text[text.find(scheme)? + scheme.len()..];
    let authority = &rest[..rest.find('"')?];
    authority.rsplit(':').next()?.parse().ok()
}

pub fn healthz_ok(monitor_port: u16) -> bool {
    monitor_get(monitor_port, "/healthz").is_some()
}

/// The body of `path` on the server's monitoring port (`/varz`, `/jsz`, `/healthz`), if it
/// answered 200 within a couple of seconds.
pub fn monitor_get(monitor_port: u16, path: &str) -> Option<String> {
    let address = SocketAddr::from(([127, 0, 0, 1], monitor_port));
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_millis(500)).ok()?;
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    let ok = response.starts_with("HTTP/1.1 200") || response.starts_with("HTTP/1.0 200");
    let (_, body) = response.split_once("\r\n\r\n")?;
    ok.then(|| body.to_owned())
}

/// Waits until the server `child` wrote its ports file into `ports_dir` and its `/healthz`
/// reports ready; returns the client and monitoring ports. Fails when the process exits first
/// or `timeout` passes.
pub fn wait_until_ready(
    child: &mut Child,
    ports_dir: &Path,
    timeout: Duration,
) -> Result<(u16, u16), String> {
    let deadline = Instant::now() + timeout;
    let mut ports = None;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("the process exited with {status}"));
        }
        if ports.is_none() {
            ports = read_ports_file(ports_dir);
        }
        if let Some((client, monitor)) = ports
            && healthz_ok(monitor)
        {
            return Ok((client, monitor));
        }
        if Instant::now() > deadline {
            return Err(format!("not healthy within {timeout:?}"));
        }
        thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_ports_from_the_ports_file_format() {
        let text = r#"{"nats":["nats://127.0.0.1:41234"],"monitoring":["http://127.0.0.1:8222"]}"#;
        assert_eq!(url_port(text, "nats://"), Some(41234));
        assert_eq!(url_port(text, "http://"), Some(8222));
    }
}
