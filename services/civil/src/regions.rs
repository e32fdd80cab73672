//! Kemendagri region codes, compiled in from `data/wilayah.csv`.

use std::collections::HashMap;
use std::sync::LazyLock;

const WILAYAH_CSV: &str = include_str!("../data/wilayah.csv");

static REGIONS: LazyLock<Regions> = LazyLock::new(|| Regions::from_csv(WILAYAH_CSV));

/// Region codes and names: provinces, regencies and cities, kecamatan, and the city's kelurahan.
#[derive(Debug)]
pub struct Regions {
    names: HashMap<&'static str, String>,
}

impl Regions {
    /// The shipped region list.
    pub fn shipped() -> &'static Regions {
        &REGIONS
    }

    fn from_csv(csv: &'static str) -> Self {
        let names = csv
            .lines()
            .skip(1)
            .filter_map(|line| {
                let (code, name) = line.split_once(',')?;
                let name = name.trim();
                let name = match name.strip_prefix('"').and_then(|n| n.strip_suffix('"')) {
                    Some(quoted) => quoted.replace("\"\"", "\""),
                    None => name.to_owned(),
                };
                Some((code.trim(), name))
            })
            .collect();
        Self { names }
    }

    /// The name of a region code (`35`, `35.73`, `35.73.02`, `35.73.02.1001`).
    pub fn name(&self, code: &str) -> Option<&str> {
        self.names.get(code).map(String::as_str)
    }

    /// Whether the code is known.
    pub fn contains(&self, code: &str) -> bool {
        self.names.contains_key(code)
    }

    /// How many codes have `dots` dots (0 provinces, 1 regencies, 2 kecamatan, 3 kelurahan).
    pub fn count_level(&self, dots: usize) -> usize {
        self.names
            .keys()
            .filter(|code| code.matches('.').count() == dots)
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ships_every_province_regency_and_malang_kelurahan() {
        let regions = Regions::shipped();
        assert_eq!(regions.count_level(0), 38);
        assert_eq!(regions.count_level(1), 514);
        assert_eq!(regions.name("35.73"), Some("Kota Malang"));
        for (code, name) in [
            ("35.73.01", "Blimbing"),
            ("35.73.02", "Klojen"),
            ("35.73.03", "Kedungkandang"),
            ("35.73.04", "Sukun"),
            ("35.73.05", "Lowokwaru"),
        ] {
            assert_eq!(regions.name(code), Some(name));
        }
        assert_eq!(regions.count_level(3), 57);
        assert!(regions.contains("35.73.01.1001"));
    }
}
