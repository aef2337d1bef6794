//! What a sweep did, and what it did not do (SPEC section 12, "say what was
//! not done"): the counts, the secrets that failed with their errorType,
//! and the names (up to [`NAMED`] each) of those left for the next sweep,
//! skipped as no key record, stopped for good, and another stack's. Each
//! named secret is logged at INFO as well.

use serde_json::{Value, json};

/// The most secrets a report names per kind (and logs).
pub const NAMED: usize = 100;

/// Names, counted in full but kept up to [`NAMED`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Names {
    pub count: usize,
    pub names: Vec<String>,
}

impl Names {
    pub fn add(&mut self, name: &str) {
        self.count += 1;
        if self.names.len() < NAMED {
            self.names.push(name.to_string());
        }
    }

    /// Counts `n` more whose names are not known (not listed yet).
    pub fn add_unnamed(&mut self, n: usize) {
        self.count += n;
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepReport {
    pub managed: usize,
    pub due: usize,
    pub renewed: usize,
    pub queued: usize,
    pub fresh: usize,
    pub skipped: Names,
    pub left: Names,
    pub stopped: Names,
    pub foreign: Names,
    /// (secret, errorType) of each renewal or read that failed.
    pub failed: Vec<(String, String)>,
}

impl SweepReport {
    pub fn to_json(&self) -> Value {
        let failed: Vec<Value> = self
            .failed
            .iter()
            .map(|(secret, error_type)| json!({"secret": secret, "errorType": error_type}))
            .collect();
        json!({
            "sweep": "due",
            "managed": self.managed,
            "due": self.due,
            "renewed": self.renewed,
            "queued": self.queued,
            "fresh": self.fresh,
            "skipped": self.skipped.count,
            "left": self.left.count,
            "stopped": self.stopped.count,
            "foreign": self.foreign.count,
            "failed": failed,
            "names": {
                "left": self.left.names,
                "skipped": self.skipped.names,
                "stopped": self.stopped.names,
                "foreign": self.foreign.names,
            },
        })
    }

    /// One INFO line per named secret, by kind.
    pub fn log_names(&self) {
        for (kind, names) in [
            ("left", &self.left),
            ("skipped", &self.skipped),
            ("stopped", &self.stopped),
            ("foreign", &self.foreign),
        ] {
            for name in &names.names {
                tracing::info!(secret = %name, kind, "sweep: not renewed");
            }
            if names.count > names.names.len() {
                tracing::info!(
                    kind,
                    more = names.count - names.names.len(),
                    "sweep: more not renewed than named"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_has_the_contract_shape() {
        let mut r = SweepReport {
            managed: 5,
            due: 3,
            renewed: 1,
            fresh: 1,
            failed: vec![(
                "prediction-one/api-key/retrain/7".into(),
                "PredictionOne.Unavailable".into(),
            )],
            ..SweepReport::default()
        };
        r.skipped.add("prediction-one/api-key/retrain/5");
        r.left.add("prediction-one/api-key/retrain/1");
        r.stopped.add("prediction-one/api-key/retrain/9");
        r.foreign.add("prediction-one/api-key/retrain/other");
        assert_eq!(
            r.to_json(),
            json!({"sweep": "due", "managed": 5, "due": 3, "renewed": 1, "queued": 0, "fresh": 1,
                   "skipped": 1, "left": 1, "stopped": 1, "foreign": 1,
                   "failed": [{"secret": "prediction-one/api-key/retrain/7", "errorType": "PredictionOne.Unavailable"}],
                   "names": {"left": ["prediction-one/api-key/retrain/1"],
                             "skipped": ["prediction-one/api-key/retrain/5"],
                             "stopped": ["prediction-one/api-key/retrain/9"],
                             "foreign": ["prediction-one/api-key/retrain/other"]}})
        );
    }

    #[test]
    fn names_stop_at_a_hundred_and_counts_do_not() {
        let mut n = Names::default();
        for i in 0..250 {
            n.add(&format!("s{i}"));
        }
        n.add_unnamed(5);
        assert_eq!((n.count, n.names.len()), (255, NAMED));
        assert_eq!(n.names[99], "s99");
    }
}
