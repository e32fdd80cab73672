//! RFC 3161 tokens from a real time-stamping authority (`openssl ts -reply` behind the
//! harness's HTTP endpoint): stamped, checked here and by `openssl ts -verify`, and refused
//! when altered, for other data, or from an authority the deployment does not trust.

use govbus_harness::TimestampAuthority;
use govbus_kit::audit::{Tsa, TsaTrust};

/// The position of the token's `genTime` (14 digits, an optional fraction, `Z`).
fn gen_time_at(token: &[u8]) -> Option<usize> {
    (0..token.len().saturating_sub(15)).find(|&start| {
        token[start..start + 14].iter().all(u8::is_ascii_digit)
            && token[start + 14..]
                .iter()
                .take_while(|byte| byte.is_ascii_digit() || **byte == b'.')
                .count()
                < 8
            && token[start + 14..]
                .iter()
                .find(|byte| !(byte.is_ascii_digit() || **byte == b'.'))
                == Some(&b'Z')
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_authority_stamps_and_its_token_holds_here_and_for_openssl() {
    let authority = TimestampAuthority::start().expect("the TSA starts");
    let tsa = Tsa::new(&authority.url(), None).expect("client");
    let data = b"the signature of a processing-log block";
    let token = tsa.stamp(data).await.expect("stamped");
    assert_eq!(authority.answered(), 1);

    let trust = TsaTrust::from_pem(&std::fs::read(authority.ca_path()).expect("CA"))
        .expect("trusted TSA CA");
    let stamp = trust.check(&token, data).expect("a valid token");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    assert!(
        stamp.seconds.abs_diff(now) < 3600,
        "the TSA's time, {} against {now}",
        stamp.seconds
    );

    // openssl agrees, from the token and the data alone.
    authority
        .openssl_verify(&token, data)
        .expect("openssl ts -verify says OK");

    // Other data; a changed time; a changed signature.
    let other = trust
        .check(&token, b"another block")
        .expect_err("other data");
    assert!(other.to_string().contains("imprint"), "{other}");
    let at = gen_time_at(&token).expect("a genTime in the token");
    let mut retimed = token.clone();
    retimed[at + 3] = if retimed[at + 3] == b'9' { b'8' } else { b'9' };
    let altered = trust.check(&retimed, data).expect_err("a changed time");
    assert!(altered.to_string().contains("altered"), "{altered}");
    let mut resigned = token.clone();
    let last = resigned.len() - 1;
    resigned[last] ^= 0x01;
    assert!(trust.check(&resigned, data).is_err(), "a changed signature");

    // A token of an authority this deployment does not trust.
    let stranger = TimestampAuthority::start().expect("another TSA");
    let foreign = Tsa::new(&stranger.url(), None)
        .expect("client")
        .stamp(data)
        .await
        .expect("stamped");
    let untrusted = trust.check(&foreign, data).expect_err("untrusted");
    assert!(untrusted.to_string().contains("trusts"), "{untrusted}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_authority_that_cannot_be_reached_is_reported() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let url = format!("http://{}/", listener.local_addr().expect("address"));
    drop(listener);
    let failure = Tsa::new(&url, None)
        .expect("client")
        .stamp(b"data")
        .await
        .expect_err("nobody answers");
    assert!(
        failure.to_string().contains("time-stamping authority"),
        "{failure}"
    );
}
