//! Registering a citizen: every field checked, every problem reported at once.

use govbus_kit::grpc::FieldProblems;
use time::Date;

use govbus_civil::{Kelurahan, KkNumber, Nik, PersonName, Sex, past_date, text_line};

/// Something accepted that an operator may want to look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Warning {
    /// The NIK's kecamatan digits name no current kecamatan.
    UnknownNikKecamatan,
}

impl Warning {
    /// The text returned to the caller.
    pub fn message(&self) -> &'static str {
        match self {
            Self::UnknownNikKecamatan => {
                "nik: digits 5–6 name no current kecamatan (codes were split and renumbered since \
                 many NIKs were issued); registered anyway"
            }
        }
    }
}

/// The raw fields of a registration request.
#[derive(Debug, Clone, Copy)]
pub struct RegistrationInput<'a> {
    /// NIK.
    pub nik: &'a str,
    /// KK number.
    pub kk_number: &'a str,
    /// Full name.
    pub full_name: &'a str,
    /// Place of birth.
    pub birth_place: &'a str,
    /// Date of birth, YYYY-MM-DD.
    pub birth_date: &'a str,
    /// Sex, if given.
    pub sex: Option<Sex>,
    /// Street line of the address.
    pub street: &'a str,
    /// Kelurahan code of the address.
    pub kelurahan_code: &'a str,
}

/// A citizen ready to be registered.
#[derive(Debug, Clone)]
pub struct NewCitizen {
    /// NIK.
    pub nik: Nik,
    /// KK number.
    pub kk_number: KkNumber,
    /// Full name.
    pub full_name: PersonName,
    /// Place of birth.
    pub birth_place: String,
    /// Date of birth.
    pub birth_date: Date,
    /// Sex.
    pub sex: Sex,
    /// Street line.
    pub street: String,
    /// Kelurahan.
    pub kelurahan: Kelurahan,
}

impl NewCitizen {
    /// Checks every field and the rules between them; returns the citizen and any warnings, or
    /// records every problem found in `problems`.
    pub fn parse(
        input: RegistrationInput<'_>,
        problems: &mut FieldProblems,
    ) -> Option<(Self, Vec<Warning>)> {
        let nik = problems.check("nik", Nik::parse(input.nik));
        let kk_number = problems.check("kk_number", KkNumber::parse(input.kk_number));
        let full_name = problems.check("full_name", PersonName::parse(input.full_name));
        let birth_place = problems.check("birth_place", text_line(input.birth_place, 64));
        let birth_date = problems.check("birth_date", past_date(input.birth_date));
        let sex = problems.check("sex", input.sex.ok_or("is required (male or female)"));
        let street = problems.check("address.street", text_line(input.street, 200));
        let kelurahan = problems.check(
            "address.kelurahan_code",
            Kelurahan::parse(input.kelurahan_code),
        );

        if let (Some(nik), Some(birth_date)) = (&nik, birth_date)
            && !nik.encodes_birth_date(birth_date)
        {
            problems.push(
                "birth_date",
                "does not match the date of birth encoded in the NIK (digits 7–12)",
            );
        }
        if let (Some(nik), Some(sex)) = (&nik, sex)
            && nik.encoded_sex() != sex
        {
            problems.push(
                "sex",
                "does not match the NIK (women's day of birth is encoded plus 40)",
            );
        }
        match (
            nik,
            kk_number,
            full_name,
            birth_place,
            birth_date,
            sex,
            street,
            kelurahan,
        ) {
            (
                Some(nik),
                Some(kk_number),
                Some(full_name),
                Some(birth_place),
                Some(birth_date),
                Some(sex),
                Some(street),
                Some(kelurahan),
            ) if problems.is_empty() => {
                let warnings = if nik.kecamatan_known() {
                    Vec::new()
                } else {
                    vec![Warning::UnknownNikKecamatan]
                };
                Some((
                    Self {
                        nik,
                        kk_number,
                        full_name,
                        birth_place,
                        birth_date,
                        sex,
                        street,
                        kelurahan,
                    },
                    warnings,
                ))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> RegistrationInput<'static> {
        RegistrationInput {
            nik: "3573025708900002",
            kk_number: "3573020101200001",
            full_name: "Siti Aminah",
            birth_place: "Malang",
            birth_date: "1990-08-17",
            sex: Some(Sex::Female),
            street: "Jl. Ijen No. 1, RT 01/RW 02",
            kelurahan_code: "35.73.02.1001",
        }
    }

    fn parse(input: RegistrationInput<'_>) -> Result<(NewCitizen, Vec<Warning>), Vec<String>> {
        let mut problems = FieldProblems::default();
        NewCitizen::parse(input, &mut problems).ok_or_else(|| {
            problems
                .into_violations()
                .into_iter()
                .map(|v| v.field)
                .collect()
        })
    }

    #[test]
    fn a_valid_registration_passes() {
        let (citizen, warnings) = parse(valid()).expect("valid");
        assert_eq!(citizen.sex, Sex::Female);
        assert!(warnings.is_empty());
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let fields = parse(RegistrationInput {
            kk_number: "12",
            full_name: "",
            sex: None,
            kelurahan_code: "35.73.09.9999",
            ..valid()
        })
        .expect_err("invalid");
        assert_eq!(
            fields,
            ["kk_number", "full_name", "sex", "address.kelurahan_code"]
        );
    }

    #[test]
    fn the_nik_must_agree_with_birth_date_and_sex() {
        let fields = parse(RegistrationInput {
            birth_date: "1990-08-18",
            sex: Some(Sex::Male),
            ..valid()
        })
        .expect_err("disagrees");
        assert_eq!(fields, ["birth_date", "sex"]);
    }

    #[test]
    fn an_unknown_kecamatan_is_a_warning() {
        let (_, warnings) = parse(RegistrationInput {
            nik: "3573995708900002",
            ..valid()
        })
        .expect("accepted");
        assert_eq!(warnings, [Warning::UnknownNikKecamatan]);
    }
}
