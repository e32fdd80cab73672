//! Made-up but valid citizens of Kota Malang: NIKs and KK numbers that pass every rule, spread
//! over the five kecamatan, numbered so that different seeds do not collide.

use govbus_proto::identity::v1::Sex;

/// Kota Malang's five kecamatan (code, one kelurahan in it).
const KECAMATAN: [(&str, &str); 5] = [
    ("01", "35.73.01.1001"),
    ("02", "35.73.02.1001"),
    ("03", "35.73.03.1001"),
    ("04", "35.73.04.1001"),
    ("05", "35.73.05.1001"),
];

const GIVEN: [&str; 10] = [
    "Ahmad", "Siti", "Budi", "Dewi", "Eko", "Fitri", "Gilang", "Hana", "Indra", "Joko",
];
const FAMILY: [&str; 10] = [
    "Santoso",
    "Rahayu",
    "Wijaya",
    "Lestari",
    "Hidayat",
    "Kusuma",
    "Pratama",
    "Saputra",
    "Wulandari",
    "Nugroho",
];

/// One made-up citizen (every field but the sex and kelurahan is personal data).
#[derive(Debug, Clone)]
pub struct Person {
    pub nik: String,
    pub name: String,
    pub birth_date: String,
    pub sex: Sex,
    pub kelurahan: String,
}

/// Citizen number `n`: every digit group of the NIK is derived from `n`, so distinct numbers
/// give distinct NIKs.
fn person(n: u64) -> Person {
    let kecamatan = (n % 5) as usize;
    let day = 1 + (n / 5) % 28;
    let month = 1 + (n / 140) % 12;
    let year = 1950 + (n / 1_680) % 55;
    let serial = 1 + (n / 92_400) % 9_999;
    let female = (n / 5).is_multiple_of(2);
    let encoded_day = if female { day + 40 } else { day };
    let (code, kelurahan) = KECAMATAN[kecamatan];
    Person {
        nik: format!(
            "3573{code}{encoded_day:02}{month:02}{:02}{serial:04}",
            year % 100
        ),
        name: format!(
            "{} {}",
            GIVEN[(n % 10) as usize],
            FAMILY[((n / 10) % 10) as usize]
        ),
        birth_date: format!("{year}-{month:02}-{day:02}"),
        sex: if female { Sex::Female } else { Sex::Male },
        kelurahan: kelurahan.to_owned(),
    }
}

/// The two members of household `household` of run `seed`, and its KK number.
pub fn household(seed: u64, household: u32) -> (Vec<Person>, String) {
    // Odd multipliers spread consecutive seeds far apart in both numbering spaces.
    let base = seed.wrapping_mul(3_999_987) % 900_000_000;
    let first = base + u64::from(household) * 2;
    let members = vec![person(first), person(first + 1)];
    let h = seed
        .wrapping_mul(1_999_993)
        .wrapping_add(u64::from(household))
        % 1_600_000_000;
    let code = KECAMATAN[(h % 5) as usize].0;
    let day = 1 + (h / 5) % 28;
    let month = 1 + (h / 140) % 12;
    let year = (h / 1_680) % 100;
    let serial = 1 + (h / 168_000) % 9_999;
    let kk = format!("3573{code}{day:02}{month:02}{year:02}{serial:04}");
    (members, kk)
}

/// A kelurahan in another kecamatan, for a move.
pub fn other_kelurahan(current: &str) -> &'static str {
    let index = KECAMATAN
        .iter()
        .position(|(_, kelurahan)| *kelurahan == current)
        .unwrap_or(0);
    KECAMATAN[(index + 1) % KECAMATAN.len()].1
}

#[cfg(test)]
mod tests {
    use super::*;
    use govbus_civil::{KkNumber, Nik};
    use std::collections::HashSet;

    #[test]
    fn citizens_are_valid_and_distinct() {
        let mut niks = HashSet::new();
        let mut kks = HashSet::new();
        for seed in [0, 1, 77, 1_764_288_007] {
            for number in 0..300 {
                let (members, kk) = household(seed, number);
                assert!(KkNumber::parse(&kk).is_ok(), "{kk}");
                assert!(kks.insert(kk));
                for member in members {
                    assert!(Nik::parse(&member.nik).is_ok(), "{}", member.nik);
                    assert!(niks.insert(member.nik));
                }
            }
        }
    }
}
