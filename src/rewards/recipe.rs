//! Parallel-R1 reward recipes by training step (steps count from 1).

use super::format::ParallelFormat;
use crate::error::{Error, Result};

/// A reward recipe.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Recipe {
    /// S1: +1 correct, -1 otherwise.
    Accuracy,
    /// Format learning on easy data: 1 if correct, uses parallel blocks and is valid, else 0.
    Gsm8kStage,
    /// S2: in every window of `window` steps, the first `acc_steps` use accuracy (+1 / -1); the
    /// others give `bonus` if correct, parallel and valid, 1 if correct without any block (and no
    /// stray tag), -1 otherwise.
    Alternating {
        /// Steps per window.
        window: u64,
        /// Accuracy steps at the start of each window.
        acc_steps: u64,
        /// Reward of a correct, valid answer that uses parallel thinking on format steps.
        bonus: f64,
    },
}

impl Recipe {
    /// Builds a recipe from its name and the alternating recipe's parameters (checked).
    pub fn new(name: &str, window: i64, acc_steps: i64, bonus: f64) -> Result<Self> {
        match name {
            "accuracy" => Ok(Recipe::Accuracy),
            "gsm8k_stage" => Ok(Recipe::Gsm8kStage),
            "alternating" => {
                if window < 1 {
                    return Err(Error::value("window", "a positive number of steps", window));
                }
                if acc_steps < 0 || acc_steps > window {
                    return Err(Error::value(
                        "acc_steps",
                        format!("a number of steps in [0, window={window}]"),
                        acc_steps,
                    ));
                }
                if !bonus.is_finite() {
                    return Err(Error::value("bonus", "a finite number", bonus));
                }
                Ok(Recipe::Alternating {
                    window: window as u64,
                    acc_steps: acc_steps as u64,
                    bonus,
                })
            }
            other => Err(Error::value(
                "recipe",
                "one of 'accuracy', 'gsm8k_stage', 'alternating'",
                format!("{other:?}"),
            )),
        }
    }

    /// True when the recipe looks at the format at `step` (false: accuracy only).
    pub fn needs_format(&self, step: u64) -> bool {
        match *self {
            Recipe::Accuracy => false,
            Recipe::Gsm8kStage => true,
            Recipe::Alternating {
                window, acc_steps, ..
            } => (step - 1) % window >= acc_steps,
        }
    }

    /// The reward of one response at `step` (>= 1). `format` is only read when
    /// [`Recipe::needs_format`] is true.
    pub fn reward(&self, step: u64, correct: bool, format: Option<&ParallelFormat>) -> f64 {
        let accuracy = if correct { 1.0 } else { -1.0 };
        let parallel_ok = || format.is_some_and(|f| f.valid && f.uses_parallel);
        match *self {
            Recipe::Accuracy => accuracy,
            Recipe::Gsm8kStage => f64::from(u8::from(correct && parallel_ok())),
            Recipe::Alternating { bonus, .. } => {
                if !self.needs_format(step) {
                    accuracy
                } else if correct && parallel_ok() {
                    bonus
                } else if correct && format.is_some_and(|f| f.valid && f.n_blocks == 0) {
                    1.0
                } else {
                    -1.0
                }
            }
        }
    }
}

/// Checks a training step (steps count from 1).
pub fn check_step(step: i64) -> Result<u64> {
    u64::try_from(step)
        .ok()
        .filter(|&s| s >= 1)
        .ok_or_else(|| Error::value("step", "a training step >= 1 (steps count from 1)", step))
}

#[cfg(test)]
mod tests {
    use super::super::format::{text_format, TagStrings};
    use super::*;

    #[test]
    fn alternating_windows() {
        let r = Recipe::new("alternating", 10, 8, 1.2).unwrap();
        let tags = TagStrings::default();
        let par = text_format(
            "<Parallel><Path>a</Path><Path>b</Path></Parallel><Summary>s</Summary>",
            &tags,
        );
        let plain = text_format("no blocks", &tags);
        let broken = text_format(
            "<Parallel><Path>a</Path></Parallel><Summary>s</Summary>",
            &tags,
        );
        for step in 1..=30u64 {
            let fmt_step = matches!(step % 10, 9 | 0);
            let got = |c, f: &ParallelFormat| r.reward(step, c, Some(f));
            assert_eq!(got(true, &par), if fmt_step { 1.2 } else { 1.0 });
            assert_eq!(got(false, &par), -1.0);
            assert_eq!(got(true, &plain), 1.0);
            assert_eq!(got(true, &broken), if fmt_step { -1.0 } else { 1.0 });
        }
        let g = Recipe::new("gsm8k_stage", 10, 8, 1.2).unwrap();
        assert_eq!(g.reward(1, true, Some(&par)), 1.0);
        assert_eq!(g.reward(1, true, Some(&plain)), 0.0);
        assert!(Recipe::new("alternating", 0, 0, 1.0).is_err());
        assert!(Recipe::new("alternating", 10, 11, 1.0).is_err());
        assert!(Recipe::new("nope", 10, 8, 1.0).is_err());
        assert!(check_step(0).is_err() && check_step(3).unwrap() == 3);
    }
}
