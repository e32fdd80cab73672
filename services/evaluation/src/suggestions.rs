//! The levels the bus's evidence suggests for the indicators it evidences, each with the facts
//! behind it; shown beside the recorded levels, never replacing them.

use std::collections::BTreeMap;

use crate::connector::{ConnectorContext, connector_level};
use crate::evidence::EvidenceSnapshot;
use crate::instrument::{EvidenceRule, Instrument};

/// A suggested level and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suggestion {
    /// Level (0: no suggestion).
    pub level: u8,
    /// Facts behind it.
    pub facts: Vec<String>,
}

/// The level the evidence suggests for an indicator, with the facts behind it.
pub fn suggest(
    instrument: &Instrument,
    indicator: u32,
    evidence: &EvidenceSnapshot,
    connector: &ConnectorContext<'_>,
) -> Option<Suggestion> {
    let rule = instrument.evidence.get(&indicator)?;
    let mut facts = Vec::new();
    let level = match rule {
        EvidenceRule::ServiceConnector => connector_level(evidence, connector, &mut facts),
        EvidenceRule::PublicService { service } => {
            let published: u64 = evidence
                .events
                .iter()
                .filter(|count| count.service == *service)
                .map(|count| count.events)
                .sum();
            if published == 0 {
                facts.push(format!("{service} has published no events on the bus"));
                0
            } else {
                facts.push(format!(
                    "{service} published {published} transaction event(s) on the bus"
                ));
                let mut level = 3;
                for flow in evidence
                    .flows
                    .iter()
                    .filter(|f| f.from_service == *service || f.to_service == *service)
                {
                    facts.push(format!(
                        "{} reacted {} time(s) to events of {}",
                        flow.to_service, flow.reactions, flow.from_service
                    ));
                    level = 4;
                }
                for call in evidence
                    .calls
                    .iter()
                    .filter(|c| c.caller == *service || c.callee == *service)
                {
                    facts.push(format!(
                        "{} called {}.{} {} time(s)",
                        call.caller, call.callee, call.method, call.calls
                    ));
                    level = 4;
                }
                let deadlines = evidence.licensing;
                let decided = deadlines.decisions + deadlines.deemed_approved;
                if service == "licensing" && decided > 0 {
                    facts.push(format!(
                        "{} of {decided} licensing decisions met their service-level deadline ({} deemed approved)",
                        deadlines.within_deadline, deadlines.deemed_approved
                    ));
                    // Optimalisasi: collaborating and keeping at least 95 % of decisions on time.
                    if level == 4 && deadlines.within_deadline * 100 >= decided * 95 {
                        level = 5;
                    }
                }
                level
            }
        }
        EvidenceRule::ComplaintService { service } => {
            complaint_handling(service, &evidence.complaints, &mut facts)
        }
    };
    Some(Suggestion { level, facts })
}

/// Indicator 42 (Layanan Pengaduan Pelayanan Publik) on the technical levels: Interaksi (2)
/// when residents' complaints are filed through `service`; Transaksi (3) when they are also
/// answered through it; Kolaborasi (4) only when the national channel (SP4N-LAPOR) took
/// complaints from it; Optimalisasi (5) only when, besides, at least 95 % of the responses due
/// came within their deadline. Informasi (1), information about the channel alone, is not
/// something the bus sees.
fn complaint_handling(
    service: &str,
    counts: &BTreeMap<String, u64>,
    facts: &mut Vec<String>,
) -> u8 {
    let get = |measure: &str| counts.get(measure).copied().unwrap_or(0);
    let filed = get("filed");
    if filed == 0 {
        facts.push(format!("no complaint has been filed through {service}"));
        return 0;
    }
    facts.push(format!(
        "{filed} complaint(s) filed through {service}: {} accepted, {} refused, {} response(s)",
        get("accepted"),
        get("refused"),
        get("responded")
    ));
    let mut on_time = 0;
    let mut due = 0;
    for class in [
        "ringan",
        "normatif",
        "tidak-berkadar-pengawasan",
        "berkadar-pengawasan",
    ] {
        let (kept, missed) = (
            get(&format!("on-time:{class}")),
            get(&format!("late:{class}")),
        );
        if kept + missed > 0 {
            facts.push(format!(
                "{class}: {kept} of {} response deadline(s) kept ({} %)",
                kept + missed,
                kept * 100 / (kept + missed)
            ));
        }
        on_time += kept;
        due += kept + missed;
    }
    for stage in ["verification", "response"] {
        let escalated = get(&format!("escalated:{stage}"));
        if escalated > 0 {
            facts.push(format!("{escalated} complaint(s) escalated at {stage}"));
        }
    }
    let forwarded = get("forwarded");
    facts.push(if forwarded > 0 {
        format!("{forwarded} complaint(s) forwarded to the national channel (SP4N-LAPOR)")
    } else {
        "no complaint reached the national channel (SP4N-LAPOR): Kolaborasi (4) needs that link"
            .to_owned()
    });
    let mut level = 2;
    if get("responded") > 0 {
        level = 3;
    }
    if level == 3 && forwarded > 0 {
        level = 4;
        if due > 0 && on_time * 100 >= due * 95 {
            level = 5;
        } else {
            facts
                .push("Optimalisasi (5) needs at least 95 % of response deadlines kept".to_owned());
        }
    }
    level
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
        pairs
            .iter()
            .map(|(measure, count)| ((*measure).to_owned(), *count))
            .collect()
    }

    #[test]
    fn kolaborasi_needs_the_national_link_and_optimalisasi_95_percent_on_time() {
        let level = |pairs: &[(&str, u64)]| {
            let mut facts = Vec::new();
            complaint_handling("complaints", &counts(pairs), &mut facts)
        };
        assert_eq!(level(&[]), 0);
        assert_eq!(level(&[("filed", 3)]), 2);
        assert_eq!(
            level(&[("filed", 3), ("responded", 2), ("on-time:ringan", 2)]),
            3
        );
        let linked = [
            ("filed", 40),
            ("responded", 40),
            ("forwarded", 40),
            ("on-time:ringan", 19),
            ("on-time:normatif", 19),
            ("late:normatif", 2),
        ];
        // 38 of 40 deadlines kept: exactly 95 %.
        assert_eq!(level(&linked), 5);
        let mut late = linked;
        late[5] = ("late:normatif", 3);
        assert_eq!(level(&late), 4);
        let mut facts = Vec::new();
        complaint_handling("complaints", &counts(&late), &mut facts);
        assert!(
            facts
                .iter()
                .any(|fact| fact == "normatif: 19 of 22 response deadline(s) kept (86 %)"),
            "{facts:?}"
        );
    }
}
