//! The web console in a real headless Chromium, driven through WebDriver (fantoccini), on a
//! stack started by the test and filled by a demo run: every page loads and shows that run's
//! data, and the replay button replays a dead letter.
//!
//! With `GOVBUS_SCREENSHOTS=<folder>` the test also saves a PNG of each page there
//! (`scripts/screenshots` refreshes the ones in `docs/img/`).

mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use govbus_harness::ChromeDriver;
use hyper_util::client::legacy::connect::HttpConnector;
use support::{eventually, install_telemetry, plant_poison, run_demo, start};

const WAIT: Duration = Duration::from_secs(30);

/// Waits until the element matching `css` has text satisfying `check`; returns that text.
async fn text_of(browser: &Client, css: &str, check: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + WAIT;
    let mut last = String::new();
    loop {
        if let Ok(element) = browser.find(Locator::Css(css)).await
            && let Ok(text) = element.text().await
        {
            if check(&text) {
                return text;
            }
            last = text;
        }
        assert!(
            Instant::now() < deadline,
            "{css} never showed what was expected; last text: {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn rows(browser: &Client, css: &str) -> usize {
    browser
        .find_all(Locator::Css(css))
        .await
        .map(|rows| rows.len())
        .unwrap_or(0)
}

async fn screenshot(browser: &Client, name: &str) {
    let Some(folder) = std::env::var_os("GOVBUS_SCREENSHOTS").map(PathBuf::from) else {
        return;
    };
    // Let the page settle (fonts, the SVG charts) before the picture.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let png = browser.screenshot().await.expect("screenshot");
    std::fs::create_dir_all(&folder).expect("screenshot folder");
    std::fs::write(folder.join(format!("console-{name}.png")), png).expect("screenshot written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_a_demo_run_and_replays_a_dead_letter() {
    let telemetry = install_telemetry();
    let data = tempfile::tempdir().expect("temp dir");
    let running = start(data.path(), &telemetry).await;
    let summary = run_demo(&running, 16, 21).await;
    assert_eq!(summary.failures, 0, "{:?}", summary.failure_examples);
    plant_poison(&running, "poison-browser").await;
    let letters = eventually("dead letters from the poison message", async || {
        let letters = running.get("/api/deadletters").await;
        (letters["count"].as_u64() >= Some(2)).then_some(letters)
    })
    .await;
    let death_trace = eventually("the trace of a death", async || {
        let traces = running.get("/api/traces?limit=2000").await;
        traces.as_array()?.iter().find_map(|trace| {
            let services = trace["services"].as_array()?.len();
            (trace["root"].as_str()?.ends_with("/RecordDeath") && services >= 3)
                .then(|| trace["trace_id"].as_str().map(str::to_owned))
                .flatten()
        })
    })
    .await;

    let driver = ChromeDriver::start().expect("chromedriver (run scripts/install-browser)");
    let browser = ClientBuilder::new(HttpConnector::new())
        .capabilities(driver.capabilities(1280, 900))
        .connect(&driver.url())
        .await
        .expect("a headless Chromium session");
    let console = &running.console;

    // Overview: four healthy services and the flows between them.
    browser
        .goto(&format!("{console}/"))
        .await
        .expect("overview");
    let all = govbus::services::SERVICES.len();
    text_of(&browser, "#healthy-count", |text| {
        text == format!("{all}/{all}")
    })
    .await;
    let services = text_of(&browser, "#services", |text| {
        text.matches("healthy").count() == all
    })
    .await;
    for service in govbus::services::names() {
        assert!(services.contains(service), "{services}");
    }
    let flow = text_of(&browser, "#flow", |text| text.contains("welfare")).await;
    assert!(
        flow.contains("identity") && flow.contains("evaluation"),
        "{flow}"
    );
    browser
        .find(Locator::Css("#flow-diagram"))
        .await
        .expect("the flow diagram is drawn");
    screenshot(&browser, "overview").await;

    // Consumers and dead letters, then a replay by the button.
    browser
        .goto(&format!("{console}/#/consumers"))
        .await
        .expect("consumers");
    let streams = text_of(&browser, "#streams", |text| {
        text.contains("GOVBUS_IDENTITY")
    })
    .await;
    assert!(
        streams.contains("welfare-identity") || streams.contains("welfare"),
        "{streams}"
    );
    let count = letters["count"].as_u64().expect("count");
    text_of(&browser, "#dead-letter-total", |text| {
        text == count.to_string()
    })
    .await;
    assert_eq!(
        rows(&browser, "#dead-letters tbody tr[data-sequence]").await as u64,
        count
    );
    screenshot(&browser, "consumers").await;
    let first = letters["items"][0]["sequence"].as_u64().expect("sequence");
    browser
        .find(Locator::Css(&format!(
            "button.replay[data-sequence=\"{first}\"]"
        )))
        .await
        .expect("a replay button for the first dead letter")
        .click()
        .await
        .expect("click");
    // The replayed letter leaves the list (the consumer then dead-letters the still-poisoned
    // message again, as a new letter with a new sequence).
    eventually("the replayed letter to leave the page", async || {
        let gone = browser
            .find(Locator::Css(&format!("tr[data-sequence=\"{first}\"]")))
            .await
            .is_err();
        gone.then_some(())
    })
    .await;
    let (status, _) = running
        .post(&format!("/api/deadletters/{first}/replay"))
        .await;
    assert_eq!(status, 404, "the replayed letter is gone from the stream");

    // Events, masked.
    browser
        .goto(&format!("{console}/#/events"))
        .await
        .expect("events");
    let events = text_of(&browser, "#events", |text| {
        text.contains("identity.citizen")
    })
    .await;
    assert!(events.contains("•••"), "personal references are masked");
    for run in events.split(|c: char| !c.is_ascii_digit()) {
        assert!(
            !(run.len() == 16 && run.starts_with("3573")),
            "a NIK on the events page: {run}"
        );
    }

    // Traces: the list, then the waterfall of a death across the services.
    browser
        .goto(&format!("{console}/#/traces"))
        .await
        .expect("traces");
    text_of(&browser, "#traces", |text| text.contains("RecordDeath")).await;
    browser
        .goto(&format!("{console}/#/traces/{death_trace}"))
        .await
        .expect("a trace");
    let waterfall = text_of(&browser, "#waterfall", |text| text.contains("process")).await;
    assert!(
        waterfall.contains("welfare") && waterfall.contains("identity"),
        "{waterfall}"
    );
    assert!(rows(&browser, "#waterfall tbody tr").await >= 5);
    assert!(rows(&browser, "#waterfall .span").await >= 5);
    screenshot(&browser, "trace").await;

    // Complaints: where each stands, without complainants or texts.
    browser
        .goto(&format!("{console}/#/complaints"))
        .await
        .expect("complaints");
    let complaints = text_of(&browser, "#complaints", |text| text.contains("dinsos")).await;
    assert!(rows(&browser, "#complaints tbody tr[data-complaint]").await >= 4);
    assert!(
        !complaints.contains("belum diterima") && !complaints.contains("Lampu penerangan"),
        "no complaint text on the page"
    );
    for run in complaints.split(|c: char| !c.is_ascii_digit()) {
        assert!(
            !(run.len() == 16 && run.starts_with("3573")),
            "a NIK on the complaints page: {run}"
        );
    }
    screenshot(&browser, "complaints").await;

    // SPBE: Kota Malang's index per year, the trend, the domains, the live evidence.
    browser
        .goto(&format!("{console}/#/spbe"))
        .await
        .expect("spbe");
    let history = text_of(&browser, "#spbe-history", |text| text.contains("4.24")).await;
    assert!(
        history.contains("2.60") && history.contains("Memuaskan"),
        "{history}"
    );
    browser
        .find(Locator::Css("#spbe-trend polyline"))
        .await
        .expect("the trend chart");
    assert_eq!(rows(&browser, "#spbe-domains tbody tr").await, 4);
    text_of(&browser, "#spbe-flows", |text| text.contains("identity")).await;
    screenshot(&browser, "spbe").await;

    browser.close().await.expect("session closed");
    running.stack.stop().await;
    telemetry.shutdown();
}
