//! Turning API answers into text for people.

use std::collections::HashMap;
use std::fmt::Write as _;

use crate::api::{
    DeadLetterList, DeadLetterView, EventView, Overview, RecordedSpan, StreamView, SubjectHistory,
    TraceSummary, Verified,
};

/// A value that may be absent, `-` when it is.
fn or_dash(value: Option<impl ToString>) -> String {
    value.map_or_else(|| "-".to_owned(), |value| value.to_string())
}

/// An event's payload as one line, or why it could not be decoded.
fn payload(event: &EventView, pretty: bool) -> String {
    match &event.data {
        Some(data) if pretty => serde_json::to_string_pretty(data).unwrap_or_default(),
        Some(data) => data.to_string(),
        None => format!("(undecodable: {})", or_dash(event.decode_error.as_deref())),
    }
}

/// Left-aligned columns, two spaces apart.
pub(super) fn table(header: &[&str], rows: &[Vec<String>]) -> String {
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

pub(super) fn services(overview: &Overview) -> String {
    let rows: Vec<Vec<String>> = overview
        .services
        .iter()
        .map(|service| {
            vec![
                service.name.clone(),
                service.address.to_string(),
                if service.healthy {
                    "healthy".to_owned()
                } else {
                    "UNHEALTHY".to_owned()
                },
                service.detail.clone(),
            ]
        })
        .collect();
    format!(
        "{}\n\nnats {} ({}), dead letters {}, data {}",
        table(&["SERVICE", "GRPC", "STATE", "DETAIL"], &rows),
        overview.nats_url,
        if overview.nats_embedded {
            "embedded"
        } else {
            "external"
        },
        or_dash(overview.dead_letters),
        overview.data_dir,
    )
}

pub(super) fn streams(streams: &[StreamView]) -> String {
    let mut rows = Vec::new();
    for stream in streams {
        rows.push(vec![
            stream.name.clone(),
            String::new(),
            stream.messages.to_string(),
            String::new(),
            String::new(),
            String::new(),
            format!("{:.1}/s", stream.publish_rate),
        ]);
        for consumer in &stream.consumers {
            rows.push(vec![
                format!("  {}", consumer.name),
                consumer.service.clone(),
                String::new(),
                consumer.pending.to_string(),
                consumer.ack_pending.to_string(),
                consumer.lag.to_string(),
                format!("{:.1}/s", consumer.delivery_rate),
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

pub(super) fn event_line(event: &EventView) -> String {
    format!(
        "{}  {}  {}  {}",
        or_dash(event.time.as_deref()),
        or_dash(event.event_type.as_deref()),
        or_dash(event.correlation_id.as_deref()),
        payload(event, false)
    )
}

pub(super) fn dead_letters(list: &DeadLetterList) -> String {
    let rows: Vec<Vec<String>> = list
        .items
        .iter()
        .map(|letter| {
            vec![
                letter.sequence.to_string(),
                letter.consumer.clone(),
                or_dash(letter.event.event_type.as_deref()),
                letter.deliveries.to_string(),
                letter.dead_lettered_at.clone(),
                letter.reason.clone(),
            ]
        })
        .collect();
    format!(
        "{}\n\n{} dead letters",
        table(
            &["SEQ", "CONSUMER", "TYPE", "DELIVERIES", "WHEN", "REASON"],
            &rows
        ),
        list.count
    )
}

pub(super) fn dead_letter(letter: &DeadLetterView) -> String {
    let mut out = String::new();
    let event = &letter.event;
    for (label, value) in [
        ("sequence", letter.sequence.to_string()),
        ("consumer", letter.consumer.clone()),
        ("service", letter.service.clone()),
        ("reason", letter.reason.clone()),
        ("deliveries", letter.deliveries.to_string()),
        ("dead-lettered", letter.dead_lettered_at.clone()),
        ("from", letter.stream.clone()),
        ("stream seq", letter.stream_sequence.to_string()),
        ("subject", letter.subject.clone()),
        ("event id", or_dash(event.id.as_deref())),
        ("type", or_dash(event.event_type.as_deref())),
        ("correlation", or_dash(event.correlation_id.as_deref())),
        ("trace", or_dash(event.trace_id.as_deref())),
    ] {
        let _ = writeln!(out, "{label:<14} {value}");
    }
    let _ = write!(out, "{:<14} {}", "data", payload(event, true));
    out
}

pub(super) fn traces(traces: &[TraceSummary]) -> String {
    let rows: Vec<Vec<String>> = traces
        .iter()
        .map(|trace| {
            vec![
                trace.trace_id.clone(),
                trace.root.clone(),
                trace.services.join(","),
                trace.spans.to_string(),
                millis(trace.duration_micros),
                if trace.errors > 0 {
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
pub(super) fn trace_tree(spans: &[RecordedSpan]) -> String {
    let Some(start) = spans.iter().map(|span| span.start_unix_micros).min() else {
        return "empty trace".to_owned();
    };
    let ids: std::collections::HashSet<&str> =
        spans.iter().map(|span| span.span_id.as_str()).collect();
    let mut children: HashMap<Option<&str>, Vec<&RecordedSpan>> = HashMap::new();
    for span in spans {
        let parent = span
            .parent_span_id
            .as_deref()
            .filter(|parent| ids.contains(parent));
        children.entry(parent).or_default().push(span);
    }
    for list in children.values_mut() {
        list.sort_by_key(|span| span.start_unix_micros);
    }
    let mut rows = Vec::new();
    let mut stack: Vec<(&RecordedSpan, usize)> = children
        .get(&None)
        .map(|roots| roots.iter().rev().map(|root| (*root, 0)).collect())
        .unwrap_or_default();
    while let Some((span, depth)) = stack.pop() {
        rows.push(vec![
            format!("{}{}", "  ".repeat(depth), span.name),
            or_dash(span.service.as_deref()),
            format!("+{}", millis(span.start_unix_micros.saturating_sub(start))),
            millis(span.duration_micros),
            span.error
                .as_deref()
                .map(|error| format!("error: {error}"))
                .unwrap_or_default(),
        ]);
        if let Some(kids) = children.get(&Some(span.span_id.as_str())) {
            for kid in kids.iter().rev() {
                stack.push((kid, depth + 1));
            }
        }
    }
    table(&["SPAN", "SERVICE", "START", "DURATION", ""], &rows)
}

pub(super) fn audit_report(verified: &Verified) -> String {
    let report = &verified.report;
    let rows: Vec<Vec<String>> = report
        .writers
        .iter()
        .map(|writer| {
            vec![
                writer.writer.clone(),
                writer.entries.to_string(),
                writer.blocks.to_string(),
                writer.timestamped.to_string(),
                writer.untimestamped.to_string(),
                writer.head.seq.to_string(),
                writer.head.hash.chars().take(16).collect(),
            ]
        })
        .collect();
    let mut out = table(
        &[
            "WRITER",
            "ENTRIES",
            "BLOCKS",
            "TIMESTAMPED",
            "UNTIMESTAMPED",
            "LAST",
            "LAST HASH",
        ],
        &rows,
    );
    let untimestamped: u64 = report
        .writers
        .iter()
        .map(|writer| writer.untimestamped)
        .sum();
    let unchecked: u64 = report
        .writers
        .iter()
        .map(|writer| writer.timestamps_unchecked)
        .sum();
    if untimestamped > 0 {
        let _ = write!(
            out,
            "\n\n{untimestamped} blocks are untimestamped: their times are the services' own clocks \
             (no time-stamping authority was configured, or none answered, when they were written)."
        );
    }
    if unchecked > 0 {
        let _ = write!(
            out,
            "\n\n{unchecked} blocks carry timestamp tokens that were not checked: configure \
             audit.tsa_certificate with the authority's certificate."
        );
    }
    if report.problems.is_empty() {
        let _ = write!(
            out,
            "\n\nIntact: {} entries in {} blocks; every chain is complete, in order and signed.",
            report.entries, report.blocks,
        );
    } else {
        let rows: Vec<Vec<String>> = report
            .problems
            .iter()
            .map(|problem| {
                vec![
                    format!("{:?}", problem.kind).to_uppercase(),
                    problem.writer.clone(),
                    or_dash(problem.entry),
                    or_dash(problem.stream_sequence),
                    problem.detail.clone(),
                ]
            })
            .collect();
        let _ = write!(
            out,
            "\n\nNOT INTACT: {} problems\n{}",
            report.problems.len(),
            table(
                &["PROBLEM", "WRITER", "ENTRY", "STREAM SEQ", "DETAIL"],
                &rows
            )
        );
    }
    out
}

pub(super) fn audit_history(history: &SubjectHistory) -> String {
    let rows: Vec<Vec<String>> = history
        .entries
        .iter()
        .map(|entry| {
            vec![
                entry.at.clone(),
                entry.writer.clone(),
                if entry.via.is_empty() {
                    entry.requester.clone()
                } else {
                    format!("{} via {}", entry.requester, entry.via)
                },
                entry.kind.as_str().to_owned(),
                entry.action.clone(),
                entry.purpose.clone(),
                entry.trace_id.clone(),
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
        if history.registered {
            ""
        } else {
            " (the NIK is not in the population register)"
        },
        if history.log_intact {
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

    fn span(
        id: &str,
        parent: Option<&str>,
        name: &str,
        start: u64,
        error: Option<&str>,
    ) -> RecordedSpan {
        RecordedSpan {
            trace_id: "t".into(),
            span_id: id.into(),
            parent_span_id: parent.map(str::to_owned),
            name: name.into(),
            service: Some("welfare".into()),
            kind: "internal".into(),
            start_unix_micros: start,
            duration_micros: 500,
            error: error.map(str::to_owned),
            attributes: Vec::new(),
        }
    }

    #[test]
    fn a_trace_prints_as_a_tree_in_start_order() {
        let spans = [
            span("b", Some("a"), "process x", 2_000, None),
            span("a", None, "rpc RecordDeath", 1_000, None),
            span("c", Some("b"), "create y", 2_100, Some("boom")),
        ];
        let tree = trace_tree(&spans);
        let lines: Vec<&str> = tree.lines().collect();
        assert!(lines[1].starts_with("rpc RecordDeath"), "{tree}");
        assert!(lines[2].starts_with("  process x"), "{tree}");
        assert!(lines[3].starts_with("    create y"), "{tree}");
        assert!(lines[3].contains("error: boom"), "{tree}");
        assert!(lines[2].contains("+1.00 ms"), "{tree}");
    }
}
