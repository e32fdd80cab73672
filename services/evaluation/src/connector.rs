//! SPBE indicator 18, Penggunaan Sistem Penghubung Layanan: how far the instance's agencies use
//! the bus as their service connector.
//!
//! The levels, as `docs/services.md` states them for operators:
//! - Rintisan (1): the bus runs, but no agency's service or application is seen using it.
//! - Terkelola (2): some of the instance's agencies use it.
//! - Terdefinisi (3): every agency of the instance's list uses it.
//! - Terpadu dan Terukur (4): besides, a link to the national SPLP or to another instance's
//!   connector is working, and a periodic review was held in the twelve months before the
//!   assessed day.
//! - Optimum (5): besides, that review's findings were followed up (a recorded follow-up of it).
//!
//! An agency uses the bus when one of its services publishes events on it, reacts to others'
//! events, or calls or is called over it, or one of its applications (`<agency>.<application>`)
//! calls a service, directly or through the gateway.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use govbus_civil::agencies::{Agencies, AgenciesError};
use time::Date;

use crate::evidence::{EvidenceSnapshot, LinkCount};
use crate::reviews::{ConnectorReview, ReviewKind};

/// The gateway, whose events report on the bus rather than use it.
const GATEWAY: &str = "gateway";

/// The most agency codes a fact lists by name.
const LISTED: usize = 12;

/// The instance's agencies and the agency each service of the stack belongs to.
#[derive(Debug, Clone)]
pub struct Membership {
    /// The instance's agencies.
    pub agencies: Arc<Agencies>,
    /// The agency (code) of each service.
    pub members: BTreeMap<String, String>,
}

impl Membership {
    /// Kota Malang's shipped agencies, with `members` (service, agency code).
    pub fn shipped(members: &[(&str, &str)]) -> Result<Self, AgenciesError> {
        Ok(Self {
            agencies: Arc::new(Agencies::shipped()?.clone()),
            members: members
                .iter()
                .map(|(service, agency)| ((*service).to_owned(), (*agency).to_owned()))
                .collect(),
        })
    }
}

/// What indicator 18 weighs beside the bus's events. `reviews` are the latest held first.
#[derive(Debug, Clone, Copy)]
pub struct ConnectorContext<'a> {
    /// The instance's agencies.
    pub agencies: &'a Agencies,
    /// The agency each service of the stack belongs to.
    pub members: &'a BTreeMap<String, String>,
    /// The recorded reviews and follow-ups.
    pub reviews: &'a [ConnectorReview],
    /// The day the level is for: the assessed year's last day, or today if that is later.
    pub as_of: Date,
}

impl ConnectorContext<'_> {
    /// The agency `party` (a service, an application or an event type's first segment) belongs
    /// to, if it is one of the instance's.
    fn agency_of(&self, party: &str) -> Option<String> {
        let code = match party.split_once('.') {
            Some((agency, _application)) => agency,
            None => self.members.get(party).map_or(party, String::as_str),
        };
        self.agencies.get(code).map(|agency| agency.code.clone())
    }
}

/// The level indicator 18's evidence supports, with its facts appended to `facts`.
pub fn connector_level(
    evidence: &EvidenceSnapshot,
    context: &ConnectorContext<'_>,
    facts: &mut Vec<String>,
) -> u8 {
    let parties: BTreeSet<&str> = evidence
        .events
        .iter()
        .map(|count| count.service.as_str())
        // The gateway's own reports are about others' use of the bus, not a use of it.
        .filter(|service| *service != GATEWAY)
        .chain(
            evidence
                .flows
                .iter()
                .flat_map(|flow| [flow.from_service.as_str(), flow.to_service.as_str()]),
        )
        .chain(
            evidence
                .calls
                .iter()
                .flat_map(|call| [call.caller.as_str(), call.callee.as_str()]),
        )
        .collect();
    let mut users: BTreeMap<String, BTreeSet<&str>> = BTreeMap::new();
    let mut outside = BTreeSet::new();
    for party in parties {
        match context.agency_of(party) {
            Some(agency) => {
                users.entry(agency).or_default().insert(party);
            }
            None => {
                outside.insert(party);
            }
        }
    }
    let total = context.agencies.len();
    let using: Vec<String> = users
        .iter()
        .map(|(agency, parties)| {
            let parties: Vec<&str> = parties
                .iter()
                .copied()
                .filter(|party| party != agency)
                .collect();
            if parties.is_empty() {
                agency.clone()
            } else {
                format!("{agency} ({})", parties.join(", "))
            }
        })
        .collect();
    facts.push(format!(
        "{} of the instance's {total} agencies use the bus{}",
        users.len(),
        if using.is_empty() {
            String::new()
        } else {
            format!(": {}", using.join("; "))
        }
    ));
    let idle: Vec<&str> = context
        .agencies
        .iter()
        .map(|agency| agency.code.as_str())
        .filter(|code| !users.contains_key(*code))
        .collect();
    if !idle.is_empty() {
        facts.push(format!("not yet using it: {}", listed(&idle)));
    }
    if !outside.is_empty() {
        facts.push(format!(
            "seen on the bus but of no agency of the instance: {}",
            outside.into_iter().collect::<Vec<_>>().join(", ")
        ));
    }
    for flow in &evidence.flows {
        facts.push(format!(
            "{} reacted {} time(s) to events of {}",
            flow.to_service, flow.reactions, flow.from_service
        ));
    }
    for call in &evidence.calls {
        facts.push(format!(
            "{} called {}.{} {} time(s)",
            call.caller, call.callee, call.method, call.calls
        ));
    }
    let mut level = match users.len() {
        0 => 1,
        used if used < total => 2,
        _ => 3,
    };
    if level < 3 {
        facts.push("Terdefinisi (3) needs every agency of the instance using the bus".to_owned());
    }
    for link in &evidence.links {
        facts.push(format!(
            "{} ({}): {} succeeded, {} failed{}",
            link_name(&link.link),
            link.operation,
            link.succeeded,
            link.failed,
            if link.last_succeeded > 0 {
                format!(", last on {}", day_of(link.last_succeeded))
            } else {
                String::new()
            }
        ));
    }
    let since = a_year_before(context.as_of);
    let linked = evidence.links.iter().any(|link| works_since(link, since));
    if !linked {
        facts.push(format!(
            "no link to the national SPLP or to another instance's connector is evidenced working \
             in the twelve months to {}: Terpadu dan Terukur (4) needs one",
            context.as_of
        ));
    }
    let review = context.reviews.iter().find(|recorded| {
        let review = &recorded.review;
        review.kind == ReviewKind::Review
            && review.held_on <= context.as_of
            && review.held_on > since
    });
    let follow_up = review.and_then(|review| {
        context.reviews.iter().find(|recorded| {
            let follow_up = &recorded.review;
            follow_up.kind == ReviewKind::FollowUp
                && follow_up.review_id.as_deref() == Some(review.id.as_str())
                && follow_up.held_on <= context.as_of
        })
    });
    match review {
        Some(review) => facts.push(format!(
            "periodic review held on {}, recorded by {}",
            review.held_on_text(),
            review.review.recorded_by
        )),
        None => facts.push(format!(
            "no periodic review held in the twelve months to {}: Terpadu dan Terukur (4) needs one",
            context.as_of
        )),
    }
    match (review, follow_up) {
        (Some(_), Some(follow_up)) => facts.push(format!(
            "its findings followed up on {}, recorded by {}",
            follow_up.held_on_text(),
            follow_up.review.recorded_by
        )),
        (Some(_), None) => {
            facts.push("no follow-up of that review is recorded: Optimum (5) needs one".to_owned())
        }
        (None, _) => {}
    }
    if level == 3 && linked && review.is_some() {
        level = 4;
        if follow_up.is_some() {
            level = 5;
        }
    }
    level
}

/// Whether `link` works and last worked after `since` (the start of the twelve months to the
/// assessed day): a link that worked once, years ago, is not evidence of this period.
fn works_since(link: &LinkCount, since: Date) -> bool {
    let last_worked =
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(link.last_succeeded) * 1_000)
            .map(time::OffsetDateTime::date);
    link.works() && last_worked.is_ok_and(|day| day > since)
}

/// The same day a year earlier (28 February for a 29th): a review held after it, up to the
/// assessed day, was held in the twelve months before that day.
fn a_year_before(day: Date) -> Date {
    day.replace_year(day.year() - 1)
        .or_else(|_| {
            day.replace_day(28)
                .and_then(|day| day.replace_year(day.year() - 1))
        })
        .unwrap_or(day)
}

/// A link's name for people.
fn link_name(link: &str) -> &str {
    match link {
        "splp" => "SPLP",
        other => other,
    }
}

/// The day of `micros` (since the epoch), `YYYY-MM-DD`.
fn day_of(micros: i64) -> String {
    govbus_storage::time::rfc3339(micros)
        .get(..10)
        .unwrap_or_default()
        .to_owned()
}

fn listed(codes: &[&str]) -> String {
    if codes.len() <= LISTED {
        return codes.join(", ");
    }
    format!(
        "{} and {} more",
        codes[..LISTED].join(", "),
        codes.len() - LISTED
    )
}

#[cfg(test)]
mod tests {
    use time::macros::date;

    use super::*;
    use crate::evidence::{CallCount, EventCount};
    use crate::reviews::NewReview;

    const THREE: &str = "code,kind,name\n\
        dukcapil,dinas,Dinas Kependudukan dan Pencatatan Sipil\n\
        dinsos,dinas,Dinas Sosial\n\
        dpmptsp,dinas,Dinas Penanaman Modal dan Pelayanan Terpadu Satu Pintu\n";

    fn published(service: &str) -> EventCount {
        EventCount {
            service: service.to_owned(),
            event_type: format!("{service}.thing.happened.v1"),
            schema: String::new(),
            events: 1,
            first_seen: 0,
            last_seen: 0,
        }
    }

    fn review(id: &str, kind: ReviewKind, held_on: Date, of: Option<&str>) -> ConnectorReview {
        ConnectorReview {
            id: id.to_owned(),
            review: NewReview {
                kind,
                held_on,
                findings: "findings".to_owned(),
                review_id: of.map(str::to_owned),
                recorded_by: "operator".to_owned(),
                recorded_via: None,
            },
            recorded_at: 0,
        }
    }

    struct Case {
        agencies: Agencies,
        members: BTreeMap<String, String>,
        reviews: Vec<ConnectorReview>,
        as_of: Date,
    }

    impl Case {
        fn new() -> Self {
            Self {
                agencies: Agencies::parse(THREE).expect("agencies"),
                members: [("identity", "dukcapil"), ("welfare", "dinsos")]
                    .map(|(service, agency)| (service.to_owned(), agency.to_owned()))
                    .into_iter()
                    .collect(),
                reviews: Vec::new(),
                as_of: date!(2026 - 12 - 31),
            }
        }

        fn level(&self, evidence: &EvidenceSnapshot) -> (u8, Vec<String>) {
            let mut facts = Vec::new();
            let level = connector_level(
                evidence,
                &ConnectorContext {
                    agencies: &self.agencies,
                    members: &self.members,
                    reviews: &self.reviews,
                    as_of: self.as_of,
                },
                &mut facts,
            );
            (level, facts)
        }
    }

    #[test]
    fn the_review_window_is_a_calendar_year() {
        assert_eq!(a_year_before(date!(2028 - 12 - 31)), date!(2027 - 12 - 31));
        assert_eq!(a_year_before(date!(2028 - 02 - 29)), date!(2027 - 02 - 28));
        assert_eq!(a_year_before(date!(2027 - 03 - 01)), date!(2026 - 03 - 01));
    }

    #[test]
    fn all_agencies_make_level_three_and_only_a_link_and_a_review_make_four() {
        let mut case = Case::new();
        assert_eq!(case.level(&EvidenceSnapshot::default()).0, 1);
        let mut evidence = EvidenceSnapshot {
            events: vec![published("identity"), published("welfare")],
            ..EvidenceSnapshot::default()
        };
        let (level, facts) = case.level(&evidence);
        assert_eq!(level, 2, "{facts:?}");
        assert!(
            facts.contains(
                &"2 of the instance's 3 agencies use the bus: dinsos (welfare); dukcapil (identity)"
                    .to_owned()
            ),
            "{facts:?}"
        );
        assert!(facts.contains(&"not yet using it: dpmptsp".to_owned()));
        // An application of the third agency calls identity through the gateway.
        evidence.calls.push(CallCount {
            caller: "dpmptsp.sicantik".to_owned(),
            callee: "identity".to_owned(),
            method: "VerifyCitizen".to_owned(),
            calls: 3,
        });
        // A caller of no agency is named, and counts for none.
        evidence.calls.push(CallCount {
            caller: "operator".to_owned(),
            callee: "identity".to_owned(),
            method: "GetCitizen".to_owned(),
            calls: 1,
        });
        let (level, facts) = case.level(&evidence);
        assert_eq!(level, 3, "{facts:?}");
        assert!(
            facts
                .contains(&"seen on the bus but of no agency of the instance: operator".to_owned())
        );

        // A review without a link, a link without a review: still three.
        case.reviews.push(review(
            "r1",
            ReviewKind::Review,
            date!(2026 - 03 - 02),
            None,
        ));
        assert_eq!(case.level(&evidence).0, 3);
        case.reviews.clear();
        let mut splp = LinkCount {
            link: "splp".to_owned(),
            operation: "publish".to_owned(),
            succeeded: 2,
            failed: 1,
            // 2026-01-15 and 2026-01-16.
            last_succeeded: 1_768_435_200_000_000,
            last_failed: 1_768_521_600_000_000,
        };
        // Failed since it last worked: not a working link.
        evidence.links.push(splp.clone());
        let (level, facts) = case.level(&evidence);
        assert_eq!(level, 3);
        assert!(
            facts.contains(&"SPLP (publish): 2 succeeded, 1 failed, last on 2026-01-15".to_owned()),
            "{facts:?}"
        );
        assert!(
            facts
                .iter()
                .any(|fact| fact.starts_with("no link to the national SPLP"))
        );
        splp.succeeded = 3;
        splp.last_succeeded = 1_768_608_000_000_000;
        evidence.links[0] = splp;
        assert_eq!(case.level(&evidence).0, 3, "a link alone is not four");

        // Both: four; a review older than twelve months does not count.
        case.reviews.push(review(
            "r0",
            ReviewKind::Review,
            date!(2025 - 12 - 31),
            None,
        ));
        assert_eq!(case.level(&evidence).0, 3);
        case.reviews.insert(
            0,
            review("r1", ReviewKind::Review, date!(2026 - 03 - 02), None),
        );
        let (level, facts) = case.level(&evidence);
        assert_eq!(level, 4, "{facts:?}");
        assert!(facts.contains(
            &"no follow-up of that review is recorded: Optimum (5) needs one".to_owned()
        ));

        // A follow-up of the old review does not lift it; one of the counted review does.
        case.reviews.insert(
            0,
            review(
                "f0",
                ReviewKind::FollowUp,
                date!(2026 - 01 - 10),
                Some("r0"),
            ),
        );
        assert_eq!(case.level(&evidence).0, 4);
        case.reviews.insert(
            0,
            review(
                "f1",
                ReviewKind::FollowUp,
                date!(2026 - 06 - 01),
                Some("r1"),
            ),
        );
        assert_eq!(case.level(&evidence).0, 5);

        // Assessed as of a day before the second review: the first, and its follow-up, count.
        case.as_of = date!(2026 - 02 - 28);
        assert_eq!(case.level(&evidence).0, 5);
        // Before any review was held.
        case.as_of = date!(2025 - 12 - 30);
        assert_eq!(case.level(&evidence).0, 3);

        // A review in the twelve months, but the link last worked before them.
        case.as_of = date!(2027 - 03 - 01);
        case.reviews.insert(
            0,
            review("r2", ReviewKind::Review, date!(2027 - 02 - 01), None),
        );
        let (level, facts) = case.level(&evidence);
        assert_eq!(level, 3, "{facts:?}");
        assert!(facts.contains(&"no link to the national SPLP or to another instance's connector is evidenced working in the twelve months to 2027-03-01: Terpadu dan Terukur (4) needs one".to_owned()), "{facts:?}");
    }
}
