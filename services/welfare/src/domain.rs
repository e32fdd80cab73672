//! Programmes, deciles and who is eligible.

use govbus_proto::welfare::v1 as pb;

/// A social-assistance programme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Programme {
    /// Program Keluarga Harapan (conditional cash transfer).
    Pkh,
    /// Sembako / Bantuan Pangan Non-Tunai (food assistance).
    Bpnt,
    /// Penerima Bantuan Iuran Jaminan Kesehatan (health-insurance premiums).
    PbiJk,
}

impl Programme {
    /// The programme's code, as stored and published.
    pub fn code(self) -> &'static str {
        match self {
            Self::Pkh => "PKH",
            Self::Bpnt => "BPNT",
            Self::PbiJk => "PBI-JK",
        }
    }

    /// The highest desil the programme accepts.
    pub fn max_desil(self) -> u8 {
        match self {
            Self::Pkh => 4,
            Self::Bpnt | Self::PbiJk => 5,
        }
    }

    /// Reads a stored code.
    pub fn from_code(code: &str) -> Option<Self> {
        [Self::Pkh, Self::Bpnt, Self::PbiJk]
            .into_iter()
            .find(|programme| programme.code() == code)
    }

    /// From the gRPC enum (`None` for unspecified).
    pub fn from_proto(programme: pb::Programme) -> Option<Self> {
        match programme {
            pb::Programme::Pkh => Some(Self::Pkh),
            pb::Programme::Bpnt => Some(Self::Bpnt),
            pb::Programme::PbiJk => Some(Self::PbiJk),
            pb::Programme::Unspecified => None,
        }
    }

    /// To the gRPC enum.
    pub fn to_proto(self) -> pb::Programme {
        match self {
            Self::Pkh => pb::Programme::Pkh,
            Self::Bpnt => pb::Programme::Bpnt,
            Self::PbiJk => pb::Programme::PbiJk,
        }
    }
}

/// A welfare decile: 1 (poorest tenth) to 10.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Desil(u8);

impl Desil {
    /// Checks 1 to 10.
    pub fn parse(value: u32) -> Result<Self, &'static str> {
        u8::try_from(value)
            .ok()
            .filter(|desil| (1..=10).contains(desil))
            .map(Self)
            .ok_or("must be 1 (poorest tenth) to 10")
    }

    /// The number.
    pub fn value(self) -> u8 {
        self.0
    }
}

/// A benefit's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BenefitStatus {
    /// Being paid.
    Active,
    /// Stopped until reviewed.
    Suspended,
    /// The application was refused.
    Refused,
}

impl BenefitStatus {
    /// Stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Suspended => "suspended",
            Self::Refused => "refused",
        }
    }

    /// Reads the stored form.
    pub fn from_stored(text: &str) -> Option<Self> {
        match text {
            "active" => Some(Self::Active),
            "suspended" => Some(Self::Suspended),
            "refused" => Some(Self::Refused),
            _ => None,
        }
    }

    /// To the gRPC enum.
    pub fn to_proto(self) -> pb::BenefitStatus {
        match self {
            Self::Active => pb::BenefitStatus::Active,
            Self::Suspended => pb::BenefitStatus::Suspended,
            Self::Refused => pb::BenefitStatus::Refused,
        }
    }
}

/// The decision on an application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Eligible.
    Granted,
    /// Not eligible, with the reason.
    Refused(String),
}

/// Decides an application by the household's desil.
pub fn decide(programme: Programme, desil: Desil) -> Decision {
    if desil.value() <= programme.max_desil() {
        Decision::Granted
    } else {
        Decision::Refused(format!(
            "{} requires desil 1–{}; the household is in desil {}",
            programme.code(),
            programme.max_desil(),
            desil.value()
        ))
    }
}

/// Why a PKH benefit is suspended after a reassessment, if it must be.
pub fn reassessment_suspends(programme: Programme, desil: Desil) -> Option<String> {
    (programme == Programme::Pkh && desil.value() >= 5).then(|| {
        format!(
            "pending verification: household reassessed into desil {}",
            desil.value()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desil(value: u32) -> Desil {
        Desil::parse(value).expect("valid desil")
    }

    #[test]
    fn eligibility_follows_the_programme_thresholds() {
        for value in 1..=4 {
            assert_eq!(decide(Programme::Pkh, desil(value)), Decision::Granted);
        }
        assert!(
            matches!(decide(Programme::Pkh, desil(5)), Decision::Refused(reason) if reason.contains("desil 1–4"))
        );
        for programme in [Programme::Bpnt, Programme::PbiJk] {
            assert_eq!(decide(programme, desil(5)), Decision::Granted);
            assert!(matches!(decide(programme, desil(6)), Decision::Refused(_)));
        }
    }

    #[test]
    fn desil_is_one_to_ten() {
        assert!(Desil::parse(0).is_err());
        assert!(Desil::parse(11).is_err());
        assert_eq!(desil(10).value(), 10);
    }

    #[test]
    fn only_pkh_is_suspended_by_a_reassessment_to_desil_five_or_more() {
        assert!(reassessment_suspends(Programme::Pkh, desil(5)).is_some());
        assert!(reassessment_suspends(Programme::Pkh, desil(4)).is_none());
        assert!(reassessment_suspends(Programme::Bpnt, desil(9)).is_none());
    }

    #[test]
    fn codes_round_trip() {
        for programme in [Programme::Pkh, Programme::Bpnt, Programme::PbiJk] {
            assert_eq!(Programme::from_code(programme.code()), Some(programme));
            assert_eq!(Programme::from_proto(programme.to_proto()), Some(programme));
        }
    }
}
