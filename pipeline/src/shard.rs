//! Sharding a job across machines: each document belongs to exactly one of N shards, by its
//! content hash, so any scheduler that starts N copies of the same command (a Kubernetes
//! Indexed Job, a Slurm job array) splits the work without coordination.

use std::fmt;

/// A shard that cannot be: from `--shard` or the scheduler's environment.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShardError {
    #[error("shard {index}/{count}: the index must be below the count")]
    OutOfRange { index: u64, count: u64 },
    #[error("--shard {0:?}: expected I/N, e.g. 0/4")]
    Syntax(String),
    #[error("{name}={value:?} is not a number")]
    NotANumber { name: String, value: String },
    #[error("{index_var} is set but {count_var} is not: set it to the number of shards")]
    MissingCount {
        index_var: &'static str,
        count_var: &'static str,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// 0-based.
    pub index: u64,
    pub count: u64,
}

impl Shard {
    /// Whether the document with this content hash (hex sha256) is this shard's.
    pub fn contains(&self, content_sha256: &str) -> bool {
        let head = content_sha256.get(..16).unwrap_or(content_sha256);
        let n = u64::from_str_radix(head, 16).unwrap_or(0);
        n % self.count == self.index
    }

    /// From the scheduler's environment: `JOB_COMPLETION_INDEX` with `JOB_COMPLETIONS`
    /// (Kubernetes Indexed Job; set `JOB_COMPLETIONS` in the pod spec to the Job's
    /// `completions`), or `SLURM_ARRAY_TASK_ID` with `SLURM_ARRAY_TASK_COUNT` (Slurm job array;
    /// `SLURM_ARRAY_TASK_MIN` is subtracted). `None` when neither is set.
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Option<Shard>, ShardError> {
        let num = |name: &str| -> Result<Option<u64>, ShardError> {
            match get(name) {
                None => Ok(None),
                Some(v) if v.trim().is_empty() => Ok(None),
                Some(v) => v
                    .trim()
                    .parse()
                    .map(Some)
                    .map_err(|_| ShardError::NotANumber {
                        name: name.to_string(),
                        value: v.clone(),
                    }),
            }
        };
        let pairs = [
            ("JOB_COMPLETION_INDEX", "JOB_COMPLETIONS", None),
            (
                "SLURM_ARRAY_TASK_ID",
                "SLURM_ARRAY_TASK_COUNT",
                Some("SLURM_ARRAY_TASK_MIN"),
            ),
        ];
        for (index_var, count_var, min_var) in pairs {
            let Some(index) = num(index_var)? else {
                continue;
            };
            let count = num(count_var)?.ok_or(ShardError::MissingCount {
                index_var,
                count_var,
            })?;
            let min = match min_var {
                Some(v) => num(v)?.unwrap_or(0),
                None => 0,
            };
            return Shard::new(index.saturating_sub(min), count).map(Some);
        }
        Ok(None)
    }

    pub fn new(index: u64, count: u64) -> Result<Shard, ShardError> {
        if count == 0 || index >= count {
            return Err(ShardError::OutOfRange { index, count });
        }
        Ok(Shard { index, count })
    }
}

impl std::str::FromStr for Shard {
    type Err = ShardError;
    /// `I/N`, 0-based: `0/4` … `3/4`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let syntax = || ShardError::Syntax(s.to_string());
        let (i, n) = s.split_once('/').ok_or_else(syntax)?;
        let parse = |v: &str| v.trim().parse::<u64>().map_err(|_| syntax());
        Shard::new(parse(i)?, parse(n)?)
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn every_document_is_in_exactly_one_shard() {
        for n in 1..6 {
            for doc in 0..200u32 {
                let sha = crate::state::fingerprint(&[("d".into(), doc.to_string())]);
                let owners = (0..n)
                    .filter(|&i| Shard::new(i, n).unwrap().contains(&sha))
                    .count();
                assert_eq!(owners, 1);
            }
        }
    }

    #[test]
    fn parses_flags_and_scheduler_environments() {
        assert_eq!(
            "1/4".parse::<Shard>().unwrap(),
            Shard { index: 1, count: 4 }
        );
        assert!("4/4".parse::<Shard>().is_err());
        assert!("x".parse::<Shard>().is_err());
        let env = |pairs: &[(&str, &str)]| {
            let map: HashMap<String, String> = pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            Shard::from_env(move |k| map.get(k).cloned())
        };
        assert_eq!(env(&[]).unwrap(), None);
        assert_eq!(
            env(&[("JOB_COMPLETION_INDEX", "2"), ("JOB_COMPLETIONS", "3")]).unwrap(),
            Some(Shard { index: 2, count: 3 })
        );
        assert!(env(&[("JOB_COMPLETION_INDEX", "2")])
            .unwrap_err()
            .to_string()
            .contains("JOB_COMPLETIONS"));
        assert_eq!(
            env(&[
                ("SLURM_ARRAY_TASK_ID", "5"),
                ("SLURM_ARRAY_TASK_COUNT", "4"),
                ("SLURM_ARRAY_TASK_MIN", "2")
            ])
            .unwrap(),
            Some(Shard { index: 3, count: 4 })
        );
    }
}
