//! The national complaints channel (SP4N-LAPOR): accepted complaints are delivered to it over
//! the kit's outbound HTTP connector, and it answers with its tracking number.
//!
//! What is posted (JSON, `Idempotency-Key: <complaint_ref>` on every attempt):
//!
//! ```json
//! {
//!   "complaint_ref": "0190…",          "instance": "Pemerintah Kota Malang",
//!   "filed_at": "2026-12-07T02:00:00Z", "channel": "sms",
//!   "category": "infrastructure",      "class": "tidak-berkadar-pengawasan",
//!   "agency": { "code": "dpuprpkp", "name": "Dinas Pekerjaan Umum, …" },
//!   "deadline": "2026-12-25T17:00:00Z", "text": "…"
//! }
//! ```
//!
//! and what it must answer (2xx): `{"tracking_ref": "…"}`. The complainant is not named: the
//! national channel answers through the agency. SP4N-LAPOR's own integration API is documented
//! only to registered developers; a deployment puts an adapter of that shape in front of it
//! (`docs/services.md`).

use govbus_kit::outbound::{DeliveryError, HttpTarget};
use serde::{Deserialize, Serialize};

use crate::store::StoredComplaint;

/// The national channel as a delivery target.
#[derive(Debug, Clone)]
pub struct NationalChannel {
    target: HttpTarget,
    instance: String,
}

#[derive(Debug, Serialize)]
struct Forwarded<'a> {
    complaint_ref: &'a str,
    instance: &'a str,
    filed_at: String,
    channel: &'static str,
    category: &'static str,
    class: &'static str,
    agency: AgencyName<'a>,
    deadline: &'a str,
    text: &'a str,
}

#[derive(Debug, Serialize)]
struct AgencyName<'a> {
    code: &'a str,
    name: &'a str,
}

#[derive(Debug, Deserialize)]
struct Answer {
    tracking_ref: String,
}

impl NationalChannel {
    /// Delivers to `target` as `instance` (the government the complaints are about).
    pub fn new(target: HttpTarget, instance: String) -> Self {
        Self { target, instance }
    }

    /// Delivers `complaint` (with its agency's name and response deadline); returns the
    /// national tracking number.
    pub async fn deliver(
        &self,
        complaint: &StoredComplaint,
        agency_name: &str,
        deadline: &str,
    ) -> Result<String, DeliveryError> {
        let forwarded = Forwarded {
            complaint_ref: &complaint.complaint_ref,
            instance: &self.instance,
            filed_at: govbus_storage::time::rfc3339(complaint.filed_at),
            channel: complaint.channel.as_str(),
            category: complaint.category.as_str(),
            class: complaint
                .class
                .map(|class| class.as_str())
                .unwrap_or_default(),
            agency: AgencyName {
                code: &complaint.agency_code,
                name: agency_name,
            },
            deadline,
            text: &complaint.text,
        };
        let delivered = self
            .target
            .post_json(&complaint.complaint_ref, &forwarded)
            .await?;
        let name = self.target.name();
        let answer: Answer = serde_json::from_slice(&delivered.body)
            .map_err(|_| DeliveryError::refused(name, "it answered without a JSON tracking_ref"))?;
        let tracking = answer.tracking_ref.trim();
        if tracking.is_empty()
            || tracking.len() > 64
            || !tracking
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
        {
            return Err(DeliveryError::refused(
                name,
                "its tracking_ref is not 1 to 64 letters, digits or - _ . /",
            ));
        }
        Ok(tracking.to_owned())
    }
}
