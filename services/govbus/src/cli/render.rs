//! Turning API answers into text for people.

use std::collections::HashMap;
use std::fmt::Write as _;

use serde_json::Value;

fn text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Null => "-".to_owned(),
        other => other.to_string(),
    }
}

/// Left-aligned columns, two spaces apart.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|title| title.chars().count()).collect();
    for row in rows {
        for (index, cell) in row.iter().enumerate() {
            if let Some(width) = widths.get_mut(index) {
                *width = (*width).max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let line = |cells: Vec<String>, out: &mut String| {
        let padded: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(index, cell)| format!("{cell:<width$}", width = widths[index]))
            .collect();
        let _ = writeln!(out, "{}", padded.join("  ").trim_end());
    };
    line(
        header.iter().map(|title| (*title).to_owned()).collect(),
        &mut out,
    );
    for row in rows {
        line(row.clone(), &mut out);
    }
    out.trim_end().to_owned()
}

pub(super) fn services(overview: &Value) -> String {
    let rows: Vec<Vec<String>> = overview["services"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|service| {
            vec![
                text(&service["name"]),
                text(&service["address"]),
                if service["healthy"] == true {
                    "healthy".to_owned()
                } else {
                    "UNHEALTHY".to_owned()
                },
                text(&service["detail"]),
            ]
        })
        .collect();
    format!(
        "{}\n\nnats {} ({}), dead letters {}, data {}",
        table(&["SERVICE", "GRPC", "STATE", "DETAIL"], &rows),
        text(&overview["nats_url"]),
        if overview["nats_embedded"] == true {
            "embedded"
        } else {
            "external"
        },
        text(&overview["dead_letters"]),
        text(&overview["data_dir"]),
    )
}

pub(super) fn streams(streams: &Value) -> String {
    let mut rows = Vec::new();
    for stream in streams.as_array().into_iter().flatten() {
        rows.push(vec![
            text(&stream["name"]),
            String::new(),
            text(&stream["messages"]),
            String::new(),
            String::new(),
            String::new(),
            format!("{:.1}/s", stream["publish_rate"].as_f64().unwrap_or(0.0)),
        ]);
        for consumer in stream["consumers"].as_array().into_iter().flatten() {
            rows.push(vec![
                format!("  {}", text(&consumer["name"])),
                text(&consumer["service"]),
                String::new(),
                text(&consumer["pending"]),
                text(&consumer["ack_pending"]),
                text(&consumer["lag"]),
                format!("{:.1}/s", consumer["delivery_rate"].as_f64().unwrap_or(0.0)),
            ]);
        }
    }
    table(
        &[
            "STREAM / CONSUMER",
            "SERVICE",
            "MESSAGES",
            "PENDING",
            "ACK PENDING",
            "LAG",
            "RATE",
        ],
        &rows,
    )
}

pub(super) fn event_line(event: &Value) -> String {
    let data = match &event["data"] {
        Value::Null => format!("(undecodable: {})", text(&event["decode_error"])),
        data => data.to_string(),
    };
    format!(
        "{}  {}  {}  {}",
        text(&event["time"]),
        text(&event["event_type"]),
        text(&event["correlation_id"]),
        data
    )
}

pub(super) fn dead_letters(list: &Value) -> String {
    let rows: Vec<Vec<String>> = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|letter| {
            vec![
                text(&letter["sequence"]),
                text(&letter["consumer"]),
                text(&letter["event"]["event_type"]),
                text(&letter["deliveries"]),
                text(&letter["dead_lettered_at"]),
                text(&letter["reason"]),
            ]
        })
        .collect();
    format!(
        "{}\n\n{} dead letters",
        table(
            &["SEQ", "CONSUMER", "TYPE", "DELIVERIES", "WHEN", "REASON"],
            &rows
        ),
        text(&list["count"])
    )
}

pub(super) fn dead_letter(letter: &Value) -> String {
    let mut out = String::new();
    for (label, value) in [
        ("sequence", &letter["sequence"]),
        ("consumer", &letter["consumer"]),
        ("service", &letter["service"]),
        ("reason", &letter["reason"]),
        ("deliveries", &letter["deliveries"]),
        ("dead-lettered", &letter["dead_lettered_at"]),
        ("from", &letter["stream"]),
        ("stream seq", &letter["stream_sequence"]),
        ("subject", &letter["subject"]),
        ("event id", &letter["event"]["id"]),
        ("type", &letter["event"]["event_type"]),
        ("correlation", &letter["event"]["correlation_id"]),
        ("trace", &letter["event"]["trace_id"]),
    ] {
        let _ = writeln!(out, "{label:<14} {}", text(value));
    }
    let data = match &letter["event"]["data"] {
        Value::Null => format!("(undecodable: {})", text(&letter["event"]["decode_error"])),
        data => serde_json::to_string_pretty(data).unwrap_or_default(),
    };
    let _ = write!(out, "{:<14} {data}", "data");
    out
}

pub(super) fn traces(traces: &Value) -> String {
    let rows: Vec<Vec<String>> = traces
        .as_array()
        .into_iter()
        .flatten()
        .map(|trace| {
            vec![
                text(&trace["trace_id"]),
                text(&trace["root"]),
                trace["services"]
                    .as_array()
                    .map(|services| services.iter().map(text).collect::<Vec<_>>().join(","))
                    .unwrap_or_default(),
                text(&trace["spans"]),
                millis(trace["duration_micros"].as_u64().unwrap_or(0)),
                if trace["errors"].as_u64().unwrap_or(0) > 0 {
                    "error".to_owned()
                } else {
                    String::new()
                },
            ]
        })
        .collect();
    table(
        &["TRACE", "ROOT", "SERVICES", "SPANS", "DURATION", ""],
        &rows,
    )
}

fn millis(micros: u64) -> String {
    format!("{:.2} ms", micros as f64 / 1_000.0)
}

/// Spans as an indented tree, children under parents in start order, each with its offset from
/// the trace's start and its duration.
pub(super) fn trace_tree(spans: &Value) -> String {
    let spans: Vec<&Value> = spans.as_array().into_iter().flatten().collect();
    let Some(start) = spans
        .iter()
        .filter_map(|span| span["start_unix_micros"].as_u64())
        .min()
    else {
        return "empty trace".to_owned();
    };
    let ids: std::collections::HashSet<&str> = spans
        .iter()
        .filter_map(|span| span["span_id"].as_str())
        .collect();
    let mut children: HashMap<Option<&str>, Vec<&Value>> = HashMap::new();
    for span in &spans {
        let parent = span["parent_span_id"]
            .as_str()
            .filter(|parent| ids.contains(parent));
        children.entry(parent).or_default().push(span);
    }
    for list in children.values_mut() {
        list.sort_by_key(|span| span["start_unix_micros"].as_u64().unwrap_or(0));
    }
    let mut rows = Vec::new();
    let mut stack: Vec<(&Value, usize)> = children
        .get(&None)
        .map(|roots| roots.iter().rev().map(|root| (*root, 0)).collect())
        .unwrap_or_default();
    while let Some((span, depth)) = stack.pop() {
        let offset = span["start_unix_micros"].as_u64().unwrap_or(start) - start;
        rows.push(vec![
            format!("{}{}", "  ".repeat(depth), text(&span["name"])),
            text(&span["service"]),
            format!("+{}", millis(offset)),
            millis(span["duration_micros"].as_u64().unwrap_or(0)),
            span["error"]
                .as_str()
                .map(|error| format!("error: {error}"))
                .unwrap_or_default(),
        ]);
        if let Some(kids) = span["span_id"]
            .as_str()
            .and_then(|id| children.get(&Some(id)))
        {
            for kid in kids.iter().rev() {
                stack.push((kid, depth + 1));
            }
        }
    }
    table(&["SPAN", "SERVICE", "START", "DURATION", ""], &rows)
}

pub(super) fn audit_report(report: &Value) -> String {
    let rows: Vec<Vec<String>> = report["writers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|writer| {
            vec![
                text(&writer["writer"]),
                text(&writer["entries"]),
                text(&writer["blocks"]),
                text(&writer["head"]["seq"]),
                text(&writer["head"]["hash"]).chars().take(16).collect(),
            ]
        })
        .collect();
    let mut out = table(&["WRITER", "ENTRIES", "BLOCKS", "LAST", "LAST HASH"], &rows);
    let problems = report["problems"].as_array().cloned().unwrap_or_default();
    if problems.is_empty() {
        let _ = write!(
            out,
            "\n\nIntact: {} entries in {} blocks; every chain is complete, in order and signed.",
            text(&report["entries"]),
            text(&report["blocks"]),
        );
    } else {
        let rows: Vec<Vec<String>> = problems
            .iter()
            .map(|problem| {
                vec![
                    text(&problem["kind"]).to_uppercase(),
                    text(&problem["writer"]),
                    text(&problem["entry"]),
                    text(&problem["stream_sequence"]),
                    text(&problem["detail"]),
                ]
            })
            .collect();
        let _ = write!(
            out,
            "\n\nNOT INTACT: {} problems\n{}",
            problems.len(),
            table(
                &["PROBLEM", "WRITER", "ENTRY", "STREAM SEQ", "DETAIL"],
                &rows
            )
        );
    }
    out
}

pub(super) fn audit_history(history: &Value) -> String {
    let rows: Vec<Vec<String>> = history["entries"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|entry| {
            vec![
                text(&entry["at"]),
                text(&entry["writer"]),
                text(&entry["requester"]),
                text(&entry["kind"]),
                text(&entry["action"]),
                text(&entry["purpose"]),
                text(&entry["trace_id"]),
            ]
        })
        .collect();
    let count = rows.len();
    let mut out = table(
        &["WHEN", "BY", "FOR", "KIND", "WHAT", "PURPOSE", "TRACE"],
        &rows,
    );
    let _ = write!(
        out,
        "\n\n{count} processings recorded{}{}",
        if history["registered"] == true {
            ""
        } else {
            " (the NIK is not in the population register)"
        },
        if history["log_intact"] == true {
            "; the processing log verified intact."
        } else {
            "; WARNING: the processing log failed verification (run `govbus audit verify`)."
        },
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trace_prints_as_a_tree_in_start_order() {
        let spans = serde_json::json!([
            {"span_id": "b", "parent_span_id": "a", "name": "process x", "service": "welfare",
             "start_unix_micros": 2_000, "duration_micros": 500},
            {"span_id": "a", "parent_span_id": null, "name": "rpc RecordDeath", "service": "identity",
             "start_unix_micros": 1_000, "duration_micros": 3_000},
            {"span_id": "c", "parent_span_id": "b", "name": "create y", "service": "welfare",
             "start_unix_micros": 2_100, "duration_micros": 10, "error": "boom"}
        ]);
        let tree = trace_tree(&spans);
        let lines: Vec<&str> = tree.lines().collect();
        assert!(lines[1].starts_with("rpc RecordDeath"), "{tree}");
        assert!(lines[2].starts_with("  process x"), "{tree}");
        assert!(lines[3].starts_with("    create y"), "{tree}");
        assert!(lines[3].contains("error: boom"), "{tree}");
        assert!(lines[2].contains("+1.00 ms"), "{tree}");
    }
}
