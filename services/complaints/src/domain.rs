//! Complaints' vocabulary: channels, categories, classes and their deadlines, statuses, and the
//! checks on what residents and officers write.

use govbus_civil::calendar::{Deadline, Period, WorkingCalendar};
use govbus_proto::complaints::v1 as pb;

/// Declares a closed set of stored forms with their gRPC enum values.
macro_rules! stored_enum {
    (
        $(#[$meta:meta])*
        $name:ident => $proto:ty {
            $($(#[$variant_meta:meta])* $variant:ident = $text:literal => $proto_variant:ident,)+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $($(#[$variant_meta])* $variant,)+
        }

        impl $name {
            /// Every value, in order.
            pub const ALL: &'static [Self] = &[$(Self::$variant,)+];

            /// The stored and published form.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text,)+
                }
            }

            /// Reads the stored form.
            pub fn from_stored(text: &str) -> Option<Self> {
                Self::ALL.iter().copied().find(|value| value.as_str() == text)
            }

            /// To the gRPC enum.
            pub fn to_proto(self) -> $proto {
                match self {
                    $(Self::$variant => <$proto>::$proto_variant,)+
                }
            }

            /// From the gRPC enum; `None` for the unspecified value.
            pub fn from_proto(value: $proto) -> Option<Self> {
                Self::ALL.iter().copied().find(|known| known.to_proto() == value)
            }
        }
    };
}

stored_enum! {
    /// How a complaint reached the city.
    Channel => pb::Channel {
        /// A web form.
        Web = "web" => Web,
        /// A text message.
        Sms = "sms" => Sms,
        /// A mobile application.
        App = "app" => App,
        /// In person at a front office.
        Counter = "counter" => Counter,
    }
}

stored_enum! {
    /// What a complaint is about.
    Category => pb::Category {
        /// Population records.
        PopulationRecords = "population-records" => PopulationRecords,
        /// Social assistance.
        SocialAssistance = "social-assistance" => SocialAssistance,
        /// Business licensing.
        Licensing = "licensing" => Licensing,
        /// Public works.
        Infrastructure = "infrastructure" => Infrastructure,
        /// Health.
        Health = "health" => Health,
        /// Education.
        Education = "education" => Education,
        /// Waste and environment.
        Environment = "environment" => Environment,
        /// Traffic and transport.
        Transport = "transport" => Transport,
        /// Public order.
        PublicOrder = "public-order" => PublicOrder,
        /// Anything else.
        Other = "other" => Other,
    }
}

stored_enum! {
    /// A verified complaint's class: how much the agency must do, and so how long it has.
    ComplaintClass => pb::ComplaintClass {
        /// Ringan: settled by information or a simple action.
        Ringan = "ringan" => Ringan,
        /// Normatif: answered by the rules that apply.
        Normatif = "normatif" => Normatif,
        /// Tidak berkadar pengawasan: needs the agency's action, no investigation.
        TidakBerkadarPengawasan = "tidak-berkadar-pengawasan" => TidakBerkadarPengawasan,
        /// Berkadar pengawasan: alleges misconduct, needs investigation.
        BerkadarPengawasan = "berkadar-pengawasan" => BerkadarPengawasan,
    }
}

stored_enum! {
    /// Why verification refused a complaint.
    RefusalGround => pb::RefusalGround {
        /// What or where cannot be made out.
        Unclear = "unclear" => Unclear,
        /// Not about a public service of the city.
        NotPublicService = "not-public-service" => NotPublicService,
    }
}

stored_enum! {
    /// Where a complaint stands.
    Status => pb::ComplaintStatus {
        /// Waiting for verification.
        AwaitingVerification = "awaiting-verification" => AwaitingVerification,
        /// Refused (final).
        Refused = "refused" => Refused,
        /// With the agency, waiting for its response.
        WithAgency = "with-agency" => WithAgency,
        /// Responded; the resident closes or reopens it.
        Responded = "responded" => Responded,
        /// Closed by the resident (final).
        Closed = "closed" => Closed,
    }
}

/// The stage a deadline belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Verification by the complaints office.
    Verification,
    /// The agency's response.
    Response,
}

impl Stage {
    /// The published form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Verification => "verification",
            Self::Response => "response",
        }
    }

    /// The stage a status waits in, if the city owes something.
    pub fn of(status: Status) -> Option<Self> {
        match status {
            Status::AwaitingVerification => Some(Self::Verification),
            Status::WithAgency => Some(Self::Response),
            Status::Refused | Status::Responded | Status::Closed => None,
        }
    }
}

/// How long each stage may take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deadlines {
    /// Verification.
    pub verification: Period,
    /// The agency's response to a ringan complaint.
    pub ringan: Period,
    /// … to a normatif complaint.
    pub normatif: Period,
    /// … to a complaint tidak berkadar pengawasan.
    pub tidak_berkadar_pengawasan: Period,
    /// … to a complaint berkadar pengawasan.
    pub berkadar_pengawasan: Period,
}

impl Default for Deadlines {
    /// Verification 3 working days (SP4N-LAPOR's handling times); responses ringan 2,
    /// normatif 5, tidak berkadar pengawasan 14, berkadar pengawasan 60 working days (see
    /// `docs/services.md` for the sources).
    fn default() -> Self {
        Self {
            verification: Period::WorkingDays(3),
            ringan: Period::WorkingDays(2),
            normatif: Period::WorkingDays(5),
            tidak_berkadar_pengawasan: Period::WorkingDays(14),
            berkadar_pengawasan: Period::WorkingDays(60),
        }
    }
}

impl Deadlines {
    /// How long the agency has to respond to a complaint of `class`.
    pub fn response(&self, class: ComplaintClass) -> Period {
        match class {
            ComplaintClass::Ringan => self.ringan,
            ComplaintClass::Normatif => self.normatif,
            ComplaintClass::TidakBerkadarPengawasan => self.tidak_berkadar_pengawasan,
            ComplaintClass::BerkadarPengawasan => self.berkadar_pengawasan,
        }
    }
}

/// A stage's deadline as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Due {
    /// When (microseconds since the epoch).
    pub at: i64,
    /// Counted from.
    pub from: i64,
    /// In working days (none for a clock-time period).
    pub working_days: Option<u32>,
    /// Counted into a year without its decree.
    pub provisional: bool,
}

/// A period's deadline for something that started at `from`, as stored.
pub fn due(period: Period, from: i64, calendar: &WorkingCalendar) -> Due {
    let Deadline { at, provisional } =
        period.due(govbus_storage::time::from_micros(from), calendar);
    Due {
        at: govbus_storage::time::to_micros(at),
        from,
        working_days: period.working_days(),
        provisional,
    }
}

/// Why a text was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TextProblem {
    /// Shorter than allowed.
    #[error("must hold at least {0} characters")]
    TooShort(usize),
    /// Longer than allowed.
    #[error("must hold at most {0} characters")]
    TooLong(usize),
    /// A control character other than a line break or tab.
    #[error("may not contain control characters other than line breaks and tabs")]
    Control,
}

/// A text residents or officers write: trimmed, `min` to `max` characters, line breaks allowed.
pub fn free_text(text: &str, min: usize, max: usize) -> Result<String, TextProblem> {
    let text = text.trim();
    let length = text.chars().count();
    if length < min {
        return Err(TextProblem::TooShort(min));
    }
    if length > max {
        return Err(TextProblem::TooLong(max));
    }
    if text
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        return Err(TextProblem::Control);
    }
    Ok(text.to_owned())
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    #[test]
    fn stored_forms_round_trip() {
        for channel in Channel::ALL {
            assert_eq!(Channel::from_stored(channel.as_str()), Some(*channel));
            assert_eq!(Channel::from_proto(channel.to_proto()), Some(*channel));
        }
        for category in Category::ALL {
            assert_eq!(Category::from_stored(category.as_str()), Some(*category));
            assert_eq!(Category::from_proto(category.to_proto()), Some(*category));
        }
        for class in ComplaintClass::ALL {
            assert_eq!(ComplaintClass::from_stored(class.as_str()), Some(*class));
            assert_eq!(ComplaintClass::from_proto(class.to_proto()), Some(*class));
        }
        for status in Status::ALL {
            assert_eq!(Status::from_stored(status.as_str()), Some(*status));
        }
        assert_eq!(Channel::from_proto(pb::Channel::Unspecified), None);
        assert_eq!(ComplaintClass::from_stored("berat"), None);
    }

    #[test]
    fn each_class_has_its_working_days() {
        let calendar = WorkingCalendar::shipped().expect("shipped");
        let deadlines = Deadlines::default();
        // Accepted on Friday 13 March 2026: Nyepi (18–19 March), Idulfitri and its leave (20–24
        // March) are days off. Ringan: 16, 17 March; normatif: 16, 17, 25, 26, 27 March.
        let accepted = govbus_storage::time::to_micros(datetime!(2026-03-13 10:00 +7));
        let due = |period| {
            let due = super::due(period, accepted, calendar);
            govbus_storage::time::from_micros(due.at)
        };
        let response = |class| due(deadlines.response(class));
        assert_eq!(
            response(ComplaintClass::Ringan),
            datetime!(2026-03-18 00:00 +7)
        );
        assert_eq!(
            response(ComplaintClass::Normatif),
            datetime!(2026-03-28 00:00 +7)
        );
        assert!(
            response(ComplaintClass::TidakBerkadarPengawasan) > response(ComplaintClass::Normatif)
        );
        assert!(
            response(ComplaintClass::BerkadarPengawasan)
                > response(ComplaintClass::TidakBerkadarPengawasan)
        );
        // Verification: three working days, 16, 17, 25 March.
        assert_eq!(due(deadlines.verification), datetime!(2026-03-26 00:00 +7));
        assert_eq!(
            super::due(deadlines.ringan, accepted, calendar).working_days,
            Some(2)
        );
    }

    #[test]
    fn texts_are_checked() {
        assert_eq!(
            free_text("  Jalan rusak\ndi depan  ", 5, 100),
            Ok("Jalan rusak\ndi depan".to_owned())
        );
        assert_eq!(free_text("abc", 5, 100), Err(TextProblem::TooShort(5)));
        assert_eq!(free_text("abcdef", 1, 3), Err(TextProblem::TooLong(3)));
        assert_eq!(free_text("ab\u{7}cdef", 1, 30), Err(TextProblem::Control));
    }
}
