//! Evaluation instruments as data: domains, aspects, indicators with weights, level names and
//! predicates, read from TOML files (see `instruments/`), and the index they define.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::Deserialize;

use crate::score::Hundredths;

/// The instrument shipped with the service.
pub const PERMENPANRB_59_2020: &str = include_str!("../instruments/permenpanrb-59-2020.toml");

/// Why an instrument file was refused.
#[derive(Debug, thiserror::Error)]
pub enum InstrumentError {
    /// Not valid TOML of the expected shape.
    #[error("{source_name}: {message}")]
    Syntax {
        /// File or name.
        source_name: String,
        /// The parser's message.
        message: String,
    },
    /// Inconsistent content.
    #[error("{id}: {problem}")]
    Invalid {
        /// The instrument id.
        id: String,
        /// What is wrong.
        problem: String,
    },
    /// The folder could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// Path.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InstrumentFile {
    id: String,
    name: String,
    first_year: i32,
    last_year: Option<i32>,
    predicates: Vec<PredicateFile>,
    scales: Vec<ScaleFile>,
    domains: Vec<DomainFile>,
    aspects: Vec<AspectFile>,
    indicators: Vec<IndicatorFile>,
    #[serde(default)]
    evidence: Vec<EvidenceFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EvidenceFile {
    indicator: u32,
    kind: String,
    service: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PredicateFile {
    from: String,
    name: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScaleFile {
    id: String,
    levels: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DomainFile {
    number: u32,
    name: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AspectFile {
    number: u32,
    domain: u32,
    name: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IndicatorFile {
    number: u32,
    aspect: u32,
    scale: String,
    weight: String,
    name: String,
}

/// A domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Domain {
    /// Number.
    pub number: u32,
    /// Name.
    pub name: String,
}

/// An aspect of a domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Aspect {
    /// Number.
    pub number: u32,
    /// Its domain.
    pub domain: u32,
    /// Name.
    pub name: String,
}

/// An indicator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Indicator {
    /// Number.
    pub number: u32,
    /// Its aspect.
    pub aspect: u32,
    /// Its domain.
    pub domain: u32,
    /// Name.
    pub name: String,
    /// Weight in hundredths of a percent (1.30 % is 130).
    pub weight: i64,
    /// Names of levels 1, 2, … on its scale.
    pub level_names: Vec<String>,
}

/// How the bus evidences an indicator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EvidenceRule {
    /// Use of the service connector (integration between services).
    ServiceConnector,
    /// A public service that runs on the bus as `service`.
    PublicService {
        /// The service.
        service: String,
    },
    /// The complaint service that runs on the bus as `service` (indicator 42).
    ComplaintService {
        /// The service.
        service: String,
    },
}

/// A predicate and the lowest index that earns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Predicate {
    /// Lowest index.
    pub from: Hundredths,
    /// Name.
    pub name: String,
}

/// A checked instrument.
#[derive(Debug, Clone)]
pub struct Instrument {
    /// Id, e.g. `permenpanrb-59-2020`.
    pub id: String,
    /// Name.
    pub name: String,
    /// First assessment year it applies to.
    pub first_year: i32,
    /// Last assessment year it applies to, if it was replaced.
    pub last_year: Option<i32>,
    /// Predicates, highest first.
    pub predicates: Vec<Predicate>,
    /// Domains.
    pub domains: Vec<Domain>,
    /// Aspects.
    pub aspects: Vec<Aspect>,
    /// Indicators by number.
    pub indicators: BTreeMap<u32, Indicator>,
    /// Highest level (the scale's size).
    pub max_level: u8,
    /// Indicators the bus evidences, by indicator number.
    pub evidence: BTreeMap<u32, EvidenceRule>,
}

impl Instrument {
    /// Reads and checks an instrument from TOML text.
    pub fn from_toml(source_name: &str, text: &str) -> Result<Self, InstrumentError> {
        let file: InstrumentFile =
            toml::from_str(text).map_err(|error| InstrumentError::Syntax {
                source_name: source_name.to_owned(),
                message: error.to_string(),
            })?;
        let invalid = |problem: String| InstrumentError::Invalid {
            id: file.id.clone(),
            problem,
        };
        let scales: BTreeMap<&str, &Vec<String>> = file
            .scales
            .iter()
            .map(|scale| (scale.id.as_str(), &scale.levels))
            .collect();
        let sizes: BTreeSet<usize> = scales.values().map(|levels| levels.len()).collect();
        let max_level = match sizes.iter().collect::<Vec<_>>().as_slice() {
            [size] if (2..=10).contains(*size) => u8::try_from(**size).unwrap_or(5),
            _ => {
                return Err(invalid(
                    "every scale must have the same number of levels (2 to 10)".into(),
                ));
            }
        };
        let domains: BTreeSet<u32> = file.domains.iter().map(|d| d.number).collect();
        if domains.len() != file.domains.len() {
            return Err(invalid("domain numbers must be unique".into()));
        }
        let mut aspect_domain = BTreeMap::new();
        for aspect in &file.aspects {
            if !domains.contains(&aspect.domain) {
                return Err(invalid(format!(
                    "aspect {} names unknown domain {}",
                    aspect.number, aspect.domain
                )));
            }
            if aspect_domain.insert(aspect.number, aspect.domain).is_some() {
                return Err(invalid(format!(
                    "aspect {} is declared twice",
                    aspect.number
                )));
            }
        }
        let mut indicators = BTreeMap::new();
        let mut total = 0;
        for indicator in &file.indicators {
            let domain = *aspect_domain.get(&indicator.aspect).ok_or_else(|| {
                invalid(format!(
                    "indicator {} names unknown aspect {}",
                    indicator.number, indicator.aspect
                ))
            })?;
            let levels = scales.get(indicator.scale.as_str()).ok_or_else(|| {
                invalid(format!(
                    "indicator {} names unknown scale {:?}",
                    indicator.number, indicator.scale
                ))
            })?;
            let weight: Hundredths = indicator.weight.parse().map_err(|error| {
                invalid(format!("indicator {} weight: {error}", indicator.number))
            })?;
            if weight.0 == 0 {
                return Err(invalid(format!(
                    "indicator {} has no weight",
                    indicator.number
                )));
            }
            total += weight.0;
            let previous = indicators.insert(
                indicator.number,
                Indicator {
                    number: indicator.number,
                    aspect: indicator.aspect,
                    domain,
                    name: indicator.name.clone(),
                    weight: weight.0,
                    level_names: (*levels).clone(),
                },
            );
            if previous.is_some() {
                return Err(invalid(format!(
                    "indicator {} is declared twice",
                    indicator.number
                )));
            }
        }
        if total != 10_000 {
            return Err(invalid(format!(
                "weights sum to {} %, not 100 %",
                Hundredths(total)
            )));
        }
        let mut predicates = Vec::new();
        for predicate in &file.predicates {
            let from: Hundredths = predicate
                .from
                .parse()
                .map_err(|error| invalid(format!("predicate {:?}: {error}", predicate.name)))?;
            predicates.push(Predicate {
                from,
                name: predicate.name.clone(),
            });
        }
        predicates.sort_by_key(|predicate| std::cmp::Reverse(predicate.from));
        if predicates.last().is_none_or(|lowest| lowest.from.0 != 0) {
            return Err(invalid("the lowest predicate must start at 0.00".into()));
        }
        let mut evidence = BTreeMap::new();
        for entry in &file.evidence {
            if !indicators.contains_key(&entry.indicator) {
                return Err(invalid(format!(
                    "evidence names unknown indicator {}",
                    entry.indicator
                )));
            }
            let rule = match (entry.kind.as_str(), &entry.service) {
                ("service-connector", None) => EvidenceRule::ServiceConnector,
                ("public-service", Some(service)) => EvidenceRule::PublicService {
                    service: service.clone(),
                },
                ("complaint-service", Some(service)) => EvidenceRule::ComplaintService {
                    service: service.clone(),
                },
                (kind, _) => {
                    return Err(invalid(format!(
                        "evidence for indicator {}: kind {kind:?} is not service-connector, or \
                         public-service or complaint-service with a service",
                        entry.indicator
                    )));
                }
            };
            evidence.insert(entry.indicator, rule);
        }
        Ok(Self {
            id: file.id.clone(),
            name: file.name,
            first_year: file.first_year,
            last_year: file.last_year,
            predicates,
            domains: file
                .domains
                .into_iter()
                .map(|d| Domain {
                    number: d.number,
                    name: d.name,
                })
                .collect(),
            aspects: file
                .aspects
                .into_iter()
                .map(|a| Aspect {
                    number: a.number,
                    domain: a.domain,
                    name: a.name,
                })
                .collect(),
            indicators,
            max_level,
            evidence,
        })
    }

    /// The predicate of an index.
    pub fn predicate(&self, index: Hundredths) -> &str {
        self.predicates
            .iter()
            .find(|predicate| index >= predicate.from)
            .map_or("", |predicate| predicate.name.as_str())
    }

    /// The index, per domain and aspect, of a complete set of levels (indicator → level).
    ///
    /// `None` while an indicator has no level. Each sub-index is the weighted mean of its
    /// indicators' levels; all are rounded half up to two decimals from exact integers.
    pub fn index(&self, levels: &BTreeMap<u32, u8>) -> Option<IndexReport> {
        if self
            .indicators
            .keys()
            .any(|number| !levels.contains_key(number))
        {
            return None;
        }
        let weighted = |filter: &dyn Fn(&Indicator) -> bool| {
            let mut sum = 0i64;
            let mut weights = 0i64;
            for indicator in self.indicators.values().filter(|i| filter(i)) {
                let level = i64::from(*levels.get(&indicator.number).unwrap_or(&0));
                sum += level * indicator.weight;
                weights += indicator.weight;
            }
            Hundredths::ratio(sum, weights)
        };
        let overall = weighted(&|_| true)?;
        let domains = self
            .domains
            .iter()
            .filter_map(|domain| Some((domain.number, weighted(&|i| i.domain == domain.number)?)))
            .collect();
        let aspects = self
            .aspects
            .iter()
            .filter_map(|aspect| Some((aspect.number, weighted(&|i| i.aspect == aspect.number)?)))
            .collect();
        Some(IndexReport {
            predicate: self.predicate(overall).to_owned(),
            overall,
            domains,
            aspects,
        })
    }
}

/// An index with its breakdown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexReport {
    /// The index.
    pub overall: Hundredths,
    /// Its predicate.
    pub predicate: String,
    /// Sub-index per domain number.
    pub domains: BTreeMap<u32, Hundredths>,
    /// Sub-index per aspect number.
    pub aspects: BTreeMap<u32, Hundredths>,
}

/// The instruments the service knows.
#[derive(Debug, Clone)]
pub struct Instruments {
    by_id: BTreeMap<String, Instrument>,
}

impl Instruments {
    /// The shipped instrument, plus every `*.toml` in `folder` if given.
    pub fn load(folder: Option<&Path>) -> Result<Self, InstrumentError> {
        let mut by_id = BTreeMap::new();
        let shipped = Instrument::from_toml("permenpanrb-59-2020.toml", PERMENPANRB_59_2020)?;
        by_id.insert(shipped.id.clone(), shipped);
        if let Some(folder) = folder {
            let io = |source| InstrumentError::Io {
                path: folder.display().to_string(),
                source,
            };
            let mut paths: Vec<_> = std::fs::read_dir(folder)
                .map_err(io)?
                .filter_map(Result::ok)
                .map(|entry| entry.path())
                .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
                .collect();
            paths.sort();
            for path in paths {
                let text =
                    std::fs::read_to_string(&path).map_err(|source| InstrumentError::Io {
                        path: path.display().to_string(),
                        source,
                    })?;
                let instrument = Instrument::from_toml(&path.display().to_string(), &text)?;
                by_id.insert(instrument.id.clone(), instrument);
            }
        }
        Ok(Self { by_id })
    }

    /// The instrument with this id.
    pub fn get(&self, id: &str) -> Option<&Instrument> {
        self.by_id.get(id)
    }

    /// The instrument that applies to `year` (the newest that covers it).
    pub fn for_year(&self, year: i32) -> Option<&Instrument> {
        self.by_id
            .values()
            .filter(|instrument| {
                instrument.first_year <= year
                    && instrument.last_year.is_none_or(|last| year <= last)
            })
            .max_by_key(|instrument| instrument.first_year)
    }

    /// Every instrument.
    pub fn all(&self) -> impl Iterator<Item = &Instrument> {
        self.by_id.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped() -> Instrument {
        Instrument::from_toml("shipped", PERMENPANRB_59_2020)
            .expect("the shipped instrument is valid")
    }

    fn all_at(level: u8) -> BTreeMap<u32, u8> {
        (1..=47).map(|number| (number, level)).collect()
    }

    #[test]
    fn the_shipped_instrument_is_complete() {
        let instrument = shipped();
        assert_eq!(instrument.domains.len(), 4);
        assert_eq!(instrument.aspects.len(), 8);
        assert_eq!(instrument.indicators.len(), 47);
        assert_eq!(instrument.max_level, 5);
        let domain_weight = |d: u32| -> i64 {
            instrument
                .indicators
                .values()
                .filter(|i| i.domain == d)
                .map(|i| i.weight)
                .sum()
        };
        assert_eq!(
            [
                domain_weight(1),
                domain_weight(2),
                domain_weight(3),
                domain_weight(4)
            ],
            [1300, 2500, 1650, 4550]
        );
        assert_eq!(instrument.indicators[&18].weight, 250);
        assert_eq!(instrument.indicators[&41].weight, 275);
        assert_eq!(instrument.indicators[&42].weight, 300);
        assert_eq!(instrument.indicators[&1].level_names[0], "Rintisan");
        assert_eq!(instrument.indicators[&45].level_names[4], "Optimalisasi");
    }

    #[test]
    fn the_index_runs_from_one_to_five() {
        let instrument = shipped();
        assert_eq!(
            instrument.index(&all_at(1)).expect("complete").overall,
            Hundredths(100)
        );
        assert_eq!(
            instrument.index(&all_at(5)).expect("complete").overall,
            Hundredths(500)
        );
        let mut incomplete = all_at(3);
        incomplete.remove(&47);
        assert_eq!(instrument.index(&incomplete), None);
    }

    #[test]
    fn every_predicate_boundary_is_exact() {
        let instrument = shipped();
        for (index, predicate) in [
            (500, "Memuaskan"),
            (420, "Memuaskan"),
            (419, "Sangat Baik"),
            (350, "Sangat Baik"),
            (349, "Baik"),
            (260, "Baik"),
            (259, "Cukup"),
            (180, "Cukup"),
            (179, "Kurang"),
            (100, "Kurang"),
        ] {
            assert_eq!(
                instrument.predicate(Hundredths(index)),
                predicate,
                "{}",
                Hundredths(index)
            );
        }
    }

    #[test]
    fn a_hand_computed_assessment() {
        // Domains 1–3 at level 2, domain 4 at level 3:
        // 2 × (13 + 25 + 16.5) % + 3 × 45.5 % = 1.09 + 1.365 = 2.455 → 2.46, Cukup.
        let instrument = shipped();
        let levels: BTreeMap<u32, u8> =
            (1..=47).map(|n| (n, if n >= 32 { 3 } else { 2 })).collect();
        let report = instrument.index(&levels).expect("complete");
        assert_eq!(report.overall.to_string(), "2.46");
        assert_eq!(report.predicate, "Cukup");
        assert_eq!(report.domains[&1].to_string(), "2.00");
        assert_eq!(report.domains[&4].to_string(), "3.00");
        assert_eq!(report.aspects[&8].to_string(), "3.00");
    }

    #[test]
    fn an_index_of_exactly_two_sixty_is_baik() {
        let instrument = shipped();
        let mut levels = all_at(2);
        // Everything at level 2 (2.00), one level more on indicators 11–20 (25 % → +0.25),
        // 32–41 (27.5 % → +0.275) and 21–25 (7.5 % → +0.075): exactly 2.60, no rounding.
        for n in (11..=20).chain(32..=41).chain(21..=25) {
            levels.insert(n, 3);
        }
        let report = instrument.index(&levels).expect("complete");
        assert_eq!(report.overall, Hundredths(260));
        assert_eq!(report.predicate, "Baik");
    }

    #[test]
    fn inconsistent_instruments_are_refused() {
        let broken = PERMENPANRB_59_2020.replacen("weight = \"1.30\"", "weight = \"1.40\"", 1);
        let error =
            Instrument::from_toml("broken", &broken).expect_err("weights no longer sum to 100");
        assert!(error.to_string().contains("100.10"), "{error}");
        let unknown = PERMENPANRB_59_2020.replacen("aspect = 1\n", "aspect = 9\n", 1);
        assert!(Instrument::from_toml("unknown", &unknown).is_err());
    }

    #[test]
    fn a_second_instrument_is_added_as_data() {
        let folder =
            std::env::temp_dir().join(format!("govbus-instruments-{}", std::process::id()));
        std::fs::create_dir_all(&folder).expect("folder");
        let successor = r#"
            id = "pemdi-2026"
            name = "Indeks Pemerintah Digital"
            first_year = 2026
            predicates = [{ from = "4.00", name = "Sangat Baik" }, { from = "0", name = "Belum" }]
            scales = [{ id = "capability", levels = ["1", "2", "3", "4", "5"] }]
            domains = [{ number = 1, name = "Satu" }]
            aspects = [{ number = 1, domain = 1, name = "Aspek" }]
            indicators = [
                { number = 1, aspect = 1, scale = "capability", weight = "60", name = "A" },
                { number = 2, aspect = 1, scale = "capability", weight = "40", name = "B" },
            ]
        "#;
        std::fs::write(folder.join("pemdi-2026.toml"), successor).expect("written");
        let instruments = Instruments::load(Some(&folder)).expect("loaded");
        assert_eq!(
            instruments.for_year(2024).map(|i| i.id.as_str()),
            Some("permenpanrb-59-2020")
        );
        assert_eq!(
            instruments.for_year(2026).map(|i| i.id.as_str()),
            Some("pemdi-2026")
        );
        let pemdi = instruments.get("pemdi-2026").expect("present");
        let report = pemdi
            .index(&BTreeMap::from([(1, 5), (2, 3)]))
            .expect("complete");
        assert_eq!(report.overall.to_string(), "4.20");
        assert_eq!(report.predicate, "Sangat Baik");
        std::fs::remove_dir_all(&folder).expect("cleaned");
    }
}
