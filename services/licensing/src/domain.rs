//! Risk levels, what each requires, and the checks on an application.

pub use govbus_civil::calendar::Period;
use govbus_civil::calendar::{Deadline, WorkingCalendar};
use govbus_proto::licensing::v1 as pb;
use time::OffsetDateTime;

/// A business activity's risk level (PP 5/2021, PP 28/2025).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RiskLevel {
    /// Rendah.
    Rendah,
    /// Menengah rendah.
    MenengahRendah,
    /// Menengah tinggi.
    MenengahTinggi,
    /// Tinggi.
    Tinggi,
}

/// What an application goes through after its NIB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pathway {
    /// Everything is issued at once (`document`, decided by `decided_by`).
    Immediate {
        /// The document issued.
        document: &'static str,
        /// How it was decided.
        decided_by: &'static str,
    },
    /// A person must decide within the stage's deadline.
    Pending {
        /// The document awaited.
        document: &'static str,
        /// The stage: verification or approval.
        stage: Stage,
    },
}

/// A stage that waits for a person's decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Verification of the standard certificate (menengah tinggi).
    Verification,
    /// Approval of the licence (tinggi).
    Approval,
}

impl Stage {
    /// Stored and published form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Verification => "verification",
            Self::Approval => "approval",
        }
    }

    /// Reads the stored form.
    pub fn from_stored(text: &str) -> Option<Self> {
        match text {
            "verification" => Some(Self::Verification),
            "approval" => Some(Self::Approval),
            _ => None,
        }
    }
}

impl RiskLevel {
    /// Stored and published form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rendah => "rendah",
            Self::MenengahRendah => "menengah-rendah",
            Self::MenengahTinggi => "menengah-tinggi",
            Self::Tinggi => "tinggi",
        }
    }

    /// Reads the stored form.
    pub fn from_stored(text: &str) -> Option<Self> {
        [
            Self::Rendah,
            Self::MenengahRendah,
            Self::MenengahTinggi,
            Self::Tinggi,
        ]
        .into_iter()
        .find(|level| level.as_str() == text)
    }

    /// From the gRPC enum.
    pub fn from_proto(level: pb::RiskLevel) -> Option<Self> {
        match level {
            pb::RiskLevel::Rendah => Some(Self::Rendah),
            pb::RiskLevel::MenengahRendah => Some(Self::MenengahRendah),
            pb::RiskLevel::MenengahTinggi => Some(Self::MenengahTinggi),
            pb::RiskLevel::Tinggi => Some(Self::Tinggi),
            pb::RiskLevel::Unspecified => None,
        }
    }

    /// To the gRPC enum.
    pub fn to_proto(self) -> pb::RiskLevel {
        match self {
            Self::Rendah => pb::RiskLevel::Rendah,
            Self::MenengahRendah => pb::RiskLevel::MenengahRendah,
            Self::MenengahTinggi => pb::RiskLevel::MenengahTinggi,
            Self::Tinggi => pb::RiskLevel::Tinggi,
        }
    }

    /// What the level requires after the NIB.
    pub fn pathway(self) -> Pathway {
        match self {
            Self::Rendah => Pathway::Immediate {
                document: "nib",
                decided_by: "risk-based issuance",
            },
            Self::MenengahRendah => Pathway::Immediate {
                document: "sertifikat-standar",
                decided_by: "self-declaration",
            },
            Self::MenengahTinggi => Pathway::Pending {
                document: "sertifikat-standar",
                stage: Stage::Verification,
            },
            Self::Tinggi => Pathway::Pending {
                document: "izin",
                stage: Stage::Approval,
            },
        }
    }
}

/// Service-level deadlines of the stages that wait for a person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deadlines {
    /// Verification of a standard certificate.
    pub verification: Period,
    /// Approval of a licence.
    pub approval: Period,
}

impl Default for Deadlines {
    fn default() -> Self {
        Self {
            verification: Period::WorkingDays(5),
            approval: Period::WorkingDays(10),
        }
    }
}

impl Deadlines {
    /// The period of a stage.
    pub fn of(&self, stage: Stage) -> Period {
        match stage {
            Stage::Verification => self.verification,
            Stage::Approval => self.approval,
        }
    }

    /// When `stage` of an application submitted at `submitted` falls due; provisional when the
    /// count reaches a year whose days off are not shipped yet.
    pub fn due(
        &self,
        stage: Stage,
        submitted: OffsetDateTime,
        calendar: &WorkingCalendar,
    ) -> Deadline {
        self.of(stage).due(submitted, calendar)
    }
}

/// An application's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// All issued at once.
    Issued,
    /// Waiting for a decision.
    Pending,
    /// Approved by a person.
    Approved,
    /// Refused by a person.
    Rejected,
    /// Deemed approved at the deadline.
    DeemedApproved,
}

impl Status {
    /// Stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Issued => "issued",
            Self::Pending => "pending",
            Self::Approved => "approved",
            Self::Rejected => "rejected",
            Self::DeemedApproved => "deemed-approved",
        }
    }

    /// Reads the stored form.
    pub fn from_stored(text: &str) -> Option<Self> {
        [
            Self::Issued,
            Self::Pending,
            Self::Approved,
            Self::Rejected,
            Self::DeemedApproved,
        ]
        .into_iter()
        .find(|status| status.as_str() == text)
    }

    /// To the gRPC enum.
    pub fn to_proto(self) -> pb::ApplicationStatus {
        match self {
            Self::Issued => pb::ApplicationStatus::Issued,
            Self::Pending => pb::ApplicationStatus::Pending,
            Self::Approved => pb::ApplicationStatus::Approved,
            Self::Rejected => pb::ApplicationStatus::Rejected,
            Self::DeemedApproved => pb::ApplicationStatus::DeemedApproved,
        }
    }
}

/// Checks a KBLI 2020 code: five digits, a known two-digit category range (01–99).
pub fn kbli_code(text: &str) -> Result<String, &'static str> {
    let text = text.trim();
    if text.len() != 5 || !text.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err("must be a KBLI 2020 code of 5 digits");
    }
    if text.starts_with("00") {
        return Err("names no KBLI category (digits 1–2 must be 01–99)");
    }
    Ok(text.to_owned())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn deadlines_count_working_days_or_clock_time() {
        let calendar = WorkingCalendar::shipped().expect("shipped");
        // Submitted on Friday 13 March 2026, 15:00 WIB: Nyepi (18–19 March), Idulfitri and its
        // leave (20–24 March) are not working days. Five working days: 16, 17, 25, 26, 27 March.
        let submitted = time::macros::datetime!(2026-03-13 15:00 +7);
        let due = Deadlines::default().due(Stage::Verification, submitted, calendar);
        assert_eq!(due.at, time::macros::datetime!(2026-03-28 00:00 +7));
        assert!(!due.provisional);
        let exact = Deadlines {
            verification: Period::Exactly(Duration::from_secs(90)),
            approval: Period::WorkingDays(10),
        };
        let due = exact.due(Stage::Verification, submitted, calendar);
        assert_eq!(due.at, submitted + time::Duration::seconds(90));
    }

    #[test]
    fn each_risk_level_has_its_pathway() {
        assert!(matches!(
            RiskLevel::Rendah.pathway(),
            Pathway::Immediate {
                document: "nib",
                ..
            }
        ));
        assert!(matches!(
            RiskLevel::MenengahRendah.pathway(),
            Pathway::Immediate {
                document: "sertifikat-standar",
                decided_by: "self-declaration"
            }
        ));
        assert!(matches!(
            RiskLevel::MenengahTinggi.pathway(),
            Pathway::Pending {
                stage: Stage::Verification,
                ..
            }
        ));
        assert!(matches!(
            RiskLevel::Tinggi.pathway(),
            Pathway::Pending {
                document: "izin",
                stage: Stage::Approval
            }
        ));
    }

    #[test]
    fn kbli_codes_are_checked() {
        assert_eq!(kbli_code("47111"), Ok("47111".to_owned()));
        assert!(kbli_code("4711").is_err());
        assert!(kbli_code("4711a").is_err());
        assert!(kbli_code("00111").is_err());
    }

    #[test]
    fn stored_forms_round_trip() {
        for level in [
            RiskLevel::Rendah,
            RiskLevel::MenengahRendah,
            RiskLevel::MenengahTinggi,
            RiskLevel::Tinggi,
        ] {
            assert_eq!(RiskLevel::from_stored(level.as_str()), Some(level));
            assert_eq!(RiskLevel::from_proto(level.to_proto()), Some(level));
        }
        for status in [
            Status::Issued,
            Status::Pending,
            Status::Approved,
            Status::Rejected,
            Status::DeemedApproved,
        ] {
            assert_eq!(Status::from_stored(status.as_str()), Some(status));
        }
    }
}
