//! Routing rules: which pipelines and destinations a completed series goes to.
//!
//! Rules come from the config file (`[[rules]]`), are compiled and checked at start (unknown pipeline or
//! destination, bad regular expression → the node refuses to start), and are matched against the facts
//! of a completed series. Every matching rule applies; a pipeline named by several rules runs once with
//! the union of their destinations. A series that matches no rule is stored and reported, not processed.

use regex::{Regex, RegexBuilder};
use std::collections::BTreeMap;

use crate::pipeline::registry::Registry;
use segnode_db::routing::{RoutedJob, SeriesFactsRecord};
use segnode_db::{Index, IndexError};
use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum RoutingError {
    #[error("rule `{rule}`: {problem}")]
    Rule { rule: String, problem: String },
}

fn rule_err(rule: &str, problem: impl Into<String>) -> RoutingError {
    RoutingError::Rule {
        rule: rule.to_string(),
        problem: problem.into(),
    }
}

/// What routing looks at in a series.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct SeriesFacts {
    pub modality: Option<String>,
    pub body_part: Option<String>,
    pub series_description: Option<String>,
    pub protocol_name: Option<String>,
    pub slice_thickness: Option<f64>,
    pub orientation: Option<[f64; 6]>,
    pub calling_ae: Option<String>,
    pub called_ae: Option<String>,
    pub slices: i64,
}

impl From<SeriesFactsRecord> for SeriesFacts {
    fn from(r: SeriesFactsRecord) -> SeriesFacts {
        SeriesFacts {
            modality: r.modality,
            body_part: r.body_part,
            series_description: r.series_description,
            protocol_name: r.protocol_name,
            slice_thickness: r.slice_thickness,
            orientation: r.orientation,
            calling_ae: r.calling_ae,
            called_ae: r.called_ae,
            slices: r.slices,
        }
    }
}

/// A compiled rule.
#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    pub pipelines: Vec<String>,
    pub destinations: Vec<String>,
    matcher: MatchSettings,
    series_description: Option<Regex>,
    protocol_name: Option<Regex>,
}

/// What a series is routed to: pipeline → (destinations, rules that chose it).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Route {
    pub jobs: BTreeMap<String, (Vec<String>, Vec<String>)>,
}

/// One routing rule: a match on series attributes → pipelines and destinations.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSettings {
    pub name: String,
    pub pipelines: Vec<String>,
    #[serde(default)]
    pub destinations: Vec<String>,
    #[serde(rename = "match", default)]
    pub matcher: MatchSettings,
}

/// Conditions of a rule; all given ones must hold (lists: any of; text compares case-insensitively).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchSettings {
    pub modality: Option<Vec<String>>,
    pub body_part: Option<Vec<String>>,
    /// Regular expression searched in SeriesDescription.
    pub series_description: Option<String>,
    /// Regular expression searched in ProtocolName.
    pub protocol_name: Option<String>,
    /// [min, max] SliceThickness in mm.
    pub slice_thickness: Option<[f64; 2]>,
    /// ImageOrientationPatient rounded to one decimal, e.g. [1, 0, 0, 0, 0, -1] for coronal.
    pub orientation: Option<[f64; 6]>,
    pub calling_ae: Option<Vec<String>>,
    pub called_ae: Option<Vec<String>>,
    pub min_slices: Option<i64>,
    pub max_slices: Option<i64>,
}

/// The compiled rule set.
#[derive(Debug, Clone, Default)]
pub struct Router {
    pub rules: Vec<Rule>,
}

fn regex(rule: &str, what: &str, pattern: &Option<String>) -> Result<Option<Regex>, RoutingError> {
    pattern
        .as_ref()
        .map(|p| {
            RegexBuilder::new(p)
                .case_insensitive(true)
                .size_limit(1 << 20)
                .build()
                .map_err(|e| rule_err(rule, format!("{what} regex: {e}")))
        })
        .transpose()
}

impl Router {
    /// Compile and check `rules`: every pipeline known to `registry`, every destination one of
    /// `destinations` (names), every regular expression valid, no name twice.
    pub fn compile(
        rules: &[RuleSettings],
        registry: &Registry,
        destinations: &[&str],
    ) -> Result<Router, RoutingError> {
        let mut compiled = Vec::new();
        let mut names = std::collections::HashSet::new();
        for r in rules {
            compiled.push(Rule::compile(r, registry, destinations)?);
            if !names.insert(r.name.as_str()) {
                return Err(rule_err(&r.name, "defined twice"));
            }
        }
        Ok(Router { rules: compiled })
    }

    /// Route a series.
    pub fn route(&self, facts: &SeriesFacts) -> Route {
        let mut route = Route::default();
        for rule in self.rules.iter().filter(|r| r.matches(facts)) {
            for p in &rule.pipelines {
                let entry = route.jobs.entry(p.clone()).or_default();
                for d in &rule.destinations {
                    if !entry.0.contains(d) {
                        entry.0.push(d.clone());
                    }
                }
                entry.1.push(rule.name.clone());
            }
        }
        route
    }

    /// Names of the rules that match (for `segnode rules test`).
    pub fn matching(&self, facts: &SeriesFacts) -> Vec<&Rule> {
        self.rules.iter().filter(|r| r.matches(facts)).collect()
    }
}

fn any_of(list: &Option<Vec<String>>, value: &Option<String>) -> bool {
    match list {
        None => true,
        Some(list) => value
            .as_deref()
            .is_some_and(|v| list.iter().any(|x| x.trim().eq_ignore_ascii_case(v.trim()))),
    }
}

fn round1(v: f64) -> f64 {
    let r = (v * 10.0).round() / 10.0;
    if r == 0.0 {
        0.0 // no negative zero
    } else {
        r
    }
}

impl Rule {
    fn compile(
        r: &RuleSettings,
        registry: &Registry,
        destinations: &[&str],
    ) -> Result<Rule, RoutingError> {
        if r.name.trim().is_empty() {
            return Err(rule_err("(unnamed)", "needs a name"));
        }
        if r.pipelines.is_empty() {
            return Err(rule_err(&r.name, "names no pipeline"));
        }
        for p in &r.pipelines {
            registry
                .parse(p)
                .map_err(|e| rule_err(&r.name, e.to_string()))?;
        }
        for d in &r.destinations {
            if !destinations.contains(&d.as_str()) {
                return Err(rule_err(&r.name, format!("unknown destination `{d}`")));
            }
        }
        if let Some([lo, hi]) = r.matcher.slice_thickness {
            if !(lo <= hi) {
                return Err(rule_err(&r.name, "slice_thickness must be [min, max]"));
            }
        }
        Ok(Rule {
            name: r.name.clone(),
            pipelines: r.pipelines.clone(),
            destinations: r.destinations.clone(),
            series_description: regex(
                &r.name,
                "series_description",
                &r.matcher.series_description,
            )?,
            protocol_name: regex(&r.name, "protocol_name", &r.matcher.protocol_name)?,
            matcher: r.matcher.clone(),
        })
    }

    /// Whether every condition of the rule holds for the series.
    pub fn matches(&self, f: &SeriesFacts) -> bool {
        let m = &self.matcher;
        self.matches_ignoring_count(f)
            && m.min_slices.is_none_or(|n| f.slices >= n)
            && m.max_slices.is_none_or(|n| f.slices <= n)
    }

    /// Whether every condition but the slice counts holds (a series still arriving: see
    /// `crate::readahead`).
    pub fn matches_ignoring_count(&self, f: &SeriesFacts) -> bool {
        let m = &self.matcher;
        let text_ok = |re: &Option<Regex>, v: &Option<String>| match re {
            None => true,
            Some(re) => v.as_deref().is_some_and(|v| re.is_match(v)),
        };
        any_of(&m.modality, &f.modality)
            && any_of(&m.body_part, &f.body_part)
            && any_of(&m.calling_ae, &f.calling_ae)
            && any_of(&m.called_ae, &f.called_ae)
            && text_ok(&self.series_description, &f.series_description)
            && text_ok(&self.protocol_name, &f.protocol_name)
            && m.slice_thickness.is_none_or(|[lo, hi]| {
                f.slice_thickness
                    .is_some_and(|t| t >= lo - 1e-6 && t <= hi + 1e-6)
            })
            && m.orientation.is_none_or(|want| {
                f.orientation.is_some_and(|iop| {
                    iop.iter()
                        .zip(want.iter())
                        .all(|(a, b)| round1(*a) == round1(*b))
                })
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;

    fn settings(rules: &str) -> Settings {
        let toml = format!(
            "{rules}\n[[destinations]]\nname = \"pacs\"\nae_title = \"PACS\"\nhost = \"127.0.0.1\"\nport = 104\n"
        );
        let mut s = crate::config::Settings::load_from_str_for_tests(&toml);
        s.pipelines.external.insert(
            "brain".into(),
            crate::pipeline::external::ExternalSettings {
                command: vec!["true".into()],
                timeout_s: 1.0,
            },
        );
        s
    }

    fn facts() -> SeriesFacts {
        SeriesFacts {
            modality: Some("CT".into()),
            body_part: Some("CHEST".into()),
            series_description: Some("Thorax 1.0 B30f".into()),
            slice_thickness: Some(1.0),
            orientation: Some([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]),
            calling_ae: Some("CT01".into()),
            called_ae: Some("SEGNODE".into()),
            slices: 300,
            ..Default::default()
        }
    }

    #[test]
    fn chest_rule_routes_lung_to_pacs() {
        let s = settings(
            "[[rules]]\nname = \"chest\"\npipelines = [\"lung\"]\ndestinations = [\"pacs\"]\n[rules.match]\nmodality = [\"ct\"]\nseries_description = \"thorax|chest\"\nslice_thickness = [0.5, 3.0]\nmin_slices = 50\n",
        );
        let router = s.router().unwrap();
        let route = router.route(&facts());
        assert_eq!(
            route.jobs.get("lung"),
            Some(&(vec!["pacs".to_string()], vec!["chest".to_string()]))
        );
        let thick = SeriesFacts {
            slice_thickness: Some(5.0),
            ..facts()
        };
        assert!(router.route(&thick).jobs.is_empty());
        let few = SeriesFacts {
            slices: 20,
            ..facts()
        };
        assert!(router.route(&few).jobs.is_empty());
        let mr = SeriesFacts {
            modality: Some("MR".into()),
            ..facts()
        };
        assert!(router.route(&mr).jobs.is_empty());
    }

    #[test]
    fn coronal_orientation_rounded_to_one_decimal() {
        let s = settings(
            "[[rules]]\nname = \"cbct\"\npipelines = [\"external:brain\"]\n[rules.match]\norientation = [1, 0, 0, 0, 0, -1]\n",
        );
        let router = s.router().unwrap();
        let coronal = SeriesFacts {
            orientation: Some([0.99, 0.02, -0.01, 0.0, 0.04, -0.998]),
            ..facts()
        };
        assert_eq!(router.matching(&coronal).len(), 1);
        assert!(router.matching(&facts()).is_empty());
    }

    #[test]
    fn bad_rules_are_refused() {
        for bad in [
            "[[rules]]\nname = \"x\"\npipelines = [\"nope\"]\n",
            "[[rules]]\nname = \"x\"\npipelines = [\"external:missing\"]\n",
            "[[rules]]\nname = \"x\"\npipelines = [\"lung\"]\ndestinations = [\"nowhere\"]\n",
            "[[rules]]\nname = \"x\"\npipelines = [\"lung\"]\n[rules.match]\nseries_description = \"(\"\n",
            "[[rules]]\nname = \"x\"\npipelines = []\n",
        ] {
            assert!(settings(bad).router().is_err(), "{bad}");
        }
    }
}

/// Route every COMPLETE series revision not routed yet: claim it, create its jobs (or record that no
/// rule matched) in the same transaction, and wake the workers. Any number of receivers may run this
/// against one database: each revision is routed exactly once, and a crash routes nothing half-way.
pub async fn route_completed(index: &Index, router: &Router) -> Result<usize, IndexError> {
    let mut created = 0;
    for u in index.unrouted_series().await? {
        let Some(facts) = index.series_facts(&u.series_uid).await? else {
            continue;
        };
        // objects no pipeline reads (reports, key objects, presentation states …) are kept, not routed
        // (a blank SOP Class UID in the data set — some anonymisers leave one — may still be an image:
        // the loader reads the file meta's; let the pipeline decide)
        let readable = facts.sop_classes.iter().any(|c| {
            c.trim_matches(|ch: char| ch == '\0' || ch.is_whitespace())
                .is_empty()
                || segnode_net::sop::is_pipeline_image(c)
        });
        let kinds: Vec<String> = facts
            .sop_classes
            .iter()
            .map(|c| {
                segnode_net::sop::STORAGE_SOP_CLASSES
                    .iter()
                    .find(|(u, _)| u == c)
                    .map_or(c.clone(), |(_, name)| name.to_string())
            })
            .collect();
        let route = if readable {
            router.route(&facts.into())
        } else {
            Route::default()
        };
        let jobs: Vec<RoutedJob<'_>> = route
            .jobs
            .iter()
            .map(|(pipeline, (destinations, rules))| RoutedJob {
                pipeline,
                rules,
                destinations,
            })
            .collect();
        let history: Vec<String> = if !readable {
            vec![format!(
                "no image a pipeline reads ({}): stored, not processed",
                kinds.join(", ")
            )]
        } else if route.jobs.is_empty() {
            vec!["no rule matched: stored, not processed".to_string()]
        } else {
            route
                .jobs
                .iter()
                .map(|(pipeline, (destinations, rules))| {
                    let to = if destinations.is_empty() {
                        "no destination".to_string()
                    } else {
                        destinations.join(", ")
                    };
                    format!("rule {} → pipeline {pipeline} → {to}", rules.join(", "))
                })
                .collect()
        };
        let Some(jobs) = index
            .claim_routing(&u.series_uid, u.revision, &jobs, &history)
            .await?
        else {
            continue;
        };
        created += jobs;
        let (uid, revision) = (&u.series_uid, u.revision);
        if route.jobs.is_empty() {
            tracing::info!(series = %uid, revision, "no routing rule matched: stored, not processed");
        }
        for (pipeline, (_, rules)) in &route.jobs {
            tracing::info!(series = %uid, revision, pipeline = %pipeline, rules = %rules.join(","), "job queued");
        }
    }
    Ok(created)
}
