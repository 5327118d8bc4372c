//! Scoring one item and aggregating scores per category.
//!
//! - Multiple choice, Yes/No, integers and open answers: accuracy (1 or 0). Integers compare the
//!   numeric values exactly (SIBench's `Number_Int`); open answers compare case-insensitively after
//!   trimming.
//! - Numbers: SIBench's **mean relative accuracy** ([`mean_relative_accuracy`]) and
//!   Q-Spatial-Bench's **success rate** ([`within_factor`] with factor 2). Units are reconciled with
//!   [`crate::units::comparable`].
//!
//! An item's `hit` (its share in the overall score, as SIBench reports it) is its accuracy, or its
//! MRA for numbers. Items without an extracted prediction score 0 everywhere.

use std::collections::BTreeMap;

use crate::extract::Prediction;
use crate::tsv::AnswerKind;
use crate::units::comparable;

/// Mean relative accuracy (SIBench): the share of the ten thresholds θ ∈ {0.50, 0.55, …, 0.95}
/// with `|pred − gt| / |gt| < 1 − θ`. The tolerances `1 − θ` are taken as k/20, k = 1 … 10. A zero
/// ground truth makes the relative error undefined and scores 0.
pub fn mean_relative_accuracy(pred: f64, gt: f64) -> f64 {
    if gt == 0.0 || !pred.is_finite() || !gt.is_finite() {
        return 0.0;
    }
    let rel = (pred - gt).abs() / gt.abs();
    let passed = (1..=10).filter(|k| rel < f64::from(*k) / 20.0).count();
    passed as f64 / 10.0
}

/// Q-Spatial-Bench's success criterion: `max(pred/gt, gt/pred) <= factor` (factor 2 for the
/// reported success rate). Non-positive values never succeed. VLMEvalKit's implementation uses a
/// strict `<` after adding 1e-8 to both values; the two differ only at a ratio of exactly 2.
pub fn within_factor(pred: f64, gt: f64, factor: f64) -> bool {
    if pred <= 0.0 || gt <= 0.0 || !pred.is_finite() || !gt.is_finite() {
        return false;
    }
    (pred / gt).max(gt / pred) <= factor
}

/// The scores of one item; the fields that do not apply to its kind are `None`.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct ItemScore {
    /// 1/0 correctness (multiple choice, Yes/No, integers, open).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub correct: Option<bool>,
    /// Mean relative accuracy (numbers).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub mra: Option<f64>,
    /// Within a factor of 2 (numbers).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub success: Option<bool>,
    /// Accuracy of a uniform guess (1 / options for multiple choice, 1/2 for yes/no); `None` where
    /// chance is not defined (numbers, counts, open answers).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub chance: Option<f64>,
}

impl ItemScore {
    /// The item's share of the overall score: accuracy or MRA.
    pub fn hit(&self) -> f64 {
        match (self.correct, self.mra) {
            (Some(c), _) => f64::from(u8::from(c)),
            (None, Some(m)) => m,
            (None, None) => 0.0,
        }
    }
}

/// Scores a prediction (or its absence) against the ground truth of an item of `kind`.
pub fn score_item(kind: AnswerKind, gt: &Prediction, pred: Option<&Prediction>) -> ItemScore {
    match kind {
        AnswerKind::Number => {
            let (mra, success) = match (pred, gt) {
                (Some(Prediction::Number(p)), Prediction::Number(g)) => {
                    let (p, g) = comparable(*p, *g);
                    (mean_relative_accuracy(p, g), within_factor(p, g, 2.0))
                }
                _ => (0.0, false),
            };
            ItemScore {
                correct: None,
                mra: Some(mra),
                success: Some(success),
                chance: None,
            }
        }
        _ => {
            let correct = match (pred, gt) {
                (Some(Prediction::Letter(p)), Prediction::Letter(g)) => p == g,
                (Some(Prediction::YesNo(p)), Prediction::YesNo(g)) => p == g,
                (Some(Prediction::Number(p)), Prediction::Number(g)) => {
                    let (p, g) = comparable(*p, *g);
                    p == g
                }
                (Some(Prediction::Text(p)), Prediction::Text(g)) => {
                    p.trim().eq_ignore_ascii_case(g.trim())
                }
                _ => false,
            };
            ItemScore {
                correct: Some(correct),
                mra: None,
                success: None,
                chance: None,
            }
        }
    }
}

/// Aggregate scores of a group of items.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct GroupScores {
    /// Items in the group.
    pub n: usize,
    /// Mean `hit` over all items (accuracy, with MRA for numeric items).
    pub score: f64,
    /// Items scored by accuracy.
    pub n_accuracy: usize,
    /// Accuracy over those items.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub accuracy: Option<f64>,
    /// Numeric items.
    pub n_numeric: usize,
    /// Mean relative accuracy over numeric items.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub mra: Option<f64>,
    /// Success rate (within a factor of 2) over numeric items.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub success_rate: Option<f64>,
    /// Items whose output yielded no prediction.
    pub unanswered: usize,
    /// Mean chance accuracy over the items where it is defined (see [`ItemScore::chance`]).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub chance: Option<f64>,
    /// One-sided p-value of the group's hits on those items under uniform guessing: the chance
    /// that a guesser scores at least as many (see [`p_at_least`]). Small values say the score
    /// above chance is not luck; with 20-50 items a category needs several points over chance.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub p_vs_chance: Option<f64>,
}

/// P(X ≥ k) where X counts successes of independent trials with probabilities `probs`
/// (a Poisson-binomial distribution: items may have different option counts). Exact, by
/// dynamic programming over the count, O(n²); a normal approximation is poor at the 20-60 items
/// a benchmark category holds.
pub fn p_at_least(probs: &[f64], k: usize) -> f64 {
    // dist[j] = P(j successes among the trials seen so far).
    let mut dist = vec![0.0f64; probs.len() + 1];
    dist[0] = 1.0;
    for (i, &p) in probs.iter().enumerate() {
        for j in (0..=i + 1).rev() {
            let stay = dist[j] * (1.0 - p);
            let step = if j > 0 { dist[j - 1] * p } else { 0.0 };
            dist[j] = stay + step;
        }
    }
    dist.iter().skip(k).sum::<f64>().min(1.0)
}

#[derive(Default)]
struct Acc {
    n: usize,
    hit: f64,
    n_acc: usize,
    correct: usize,
    n_num: usize,
    mra: f64,
    success: usize,
    unanswered: usize,
    n_chance: usize,
    chance: f64,
    /// Chance of each item where it is defined, and how many of those items were right.
    chances: Vec<f64>,
    chance_hits: usize,
}

impl Acc {
    fn add(&mut self, s: &ItemScore, answered: bool) {
        self.n += 1;
        self.hit += s.hit();
        if let Some(c) = s.correct {
            self.n_acc += 1;
            self.correct += usize::from(c);
        }
        if let Some(m) = s.mra {
            self.n_num += 1;
            self.mra += m;
            self.success += usize::from(s.success.unwrap_or(false));
        }
        self.unanswered += usize::from(!answered);
        if let Some(c) = s.chance {
            self.n_chance += 1;
            self.chance += c;
            self.chances.push(c);
            self.chance_hits += usize::from(s.correct.unwrap_or(false));
        }
    }

    fn finish(&self) -> GroupScores {
        let ratio = |a: f64, n: usize| (n > 0).then(|| a / n as f64);
        GroupScores {
            n: self.n,
            score: ratio(self.hit, self.n).unwrap_or(0.0),
            n_accuracy: self.n_acc,
            accuracy: ratio(self.correct as f64, self.n_acc),
            n_numeric: self.n_num,
            mra: ratio(self.mra, self.n_num),
            success_rate: ratio(self.success as f64, self.n_num),
            unanswered: self.unanswered,
            chance: ratio(self.chance, self.n_chance),
            p_vs_chance: (self.n_chance > 0).then(|| p_at_least(&self.chances, self.chance_hits)),
        }
    }
}

/// Scores per category and overall.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Summary {
    pub overall: GroupScores,
    pub categories: BTreeMap<String, GroupScores>,
}

/// Aggregates `(category, score, answered)` triples.
pub fn summarize<'a>(items: impl IntoIterator<Item = (&'a str, &'a ItemScore, bool)>) -> Summary {
    let mut overall = Acc::default();
    let mut cats: BTreeMap<String, Acc> = BTreeMap::new();
    for (cat, s, answered) in items {
        overall.add(s, answered);
        cats.entry(cat.to_string()).or_default().add(s, answered);
    }
    Summary {
        overall: overall.finish(),
        categories: cats.into_iter().map(|(k, a)| (k, a.finish())).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::units::{LengthUnit, Quantity};

    #[test]
    fn mra_hand_computed() {
        // Exact: rel 0 < 0.05 … → 10/10.
        assert_eq!(mean_relative_accuracy(10.0, 10.0), 1.0);
        // rel = |12 − 10| / 10 = 0.2: passes tolerances 0.25, 0.30, …, 0.50 (k = 5…10) → 6/10.
        assert_eq!(mean_relative_accuracy(12.0, 10.0), 0.6);
        // rel = |7 − 10| / 10 = 0.3 (0.30000000000000004 in f64): passes 0.35 … 0.50 → 4/10.
        assert_eq!(mean_relative_accuracy(7.0, 10.0), 0.4);
        // rel = 0.03 → all ten pass.
        assert_eq!(mean_relative_accuracy(1.03, 1.0), 1.0);
        // rel = 0.07 → fails 0.05, passes 0.10 … 0.50 → 9/10.
        assert_eq!(mean_relative_accuracy(2.14, 2.0), 0.9);
        // rel = 0.5 is not < 0.5 → 0.
        assert_eq!(mean_relative_accuracy(15.0, 10.0), 0.0);
        // rel = |4.6 − 4| / 4 = 0.15 (0.14999999999999991): passes 0.15 … 0.50 → 8/10.
        assert_eq!(mean_relative_accuracy(4.6, 4.0), 0.8);
        assert_eq!(mean_relative_accuracy(1.0, 0.0), 0.0);
    }

    #[test]
    fn success_rate_hand_computed() {
        // max(3/2, 2/3) = 1.5 ≤ 2
        assert!(within_factor(3.0, 2.0, 2.0));
        // max(1/2, 2/1) = 2 ≤ 2 (boundary counts)
        assert!(within_factor(1.0, 2.0, 2.0));
        // max(4.5/2, 2/4.5) = 2.25 > 2
        assert!(!within_factor(4.5, 2.0, 2.0));
        // max(0.9/2, 2/0.9) = 2.22 > 2
        assert!(!within_factor(0.9, 2.0, 2.0));
        assert!(!within_factor(0.0, 2.0, 2.0));
        assert!(!within_factor(-1.0, -1.0, 2.0));
    }

    #[test]
    fn numbers_are_compared_across_units() {
        let gt = Prediction::Number(Quantity::length(100.0, LengthUnit::Centimeter));
        // 3 ft = 91.44 cm: rel = 8.56 / 100 = 0.0856 → passes 0.10 … 0.50 → MRA 0.9; ratio 1.09 → success.
        let p = Prediction::Number(Quantity::length(3.0, LengthUnit::Foot));
        let s = score_item(AnswerKind::Number, &gt, Some(&p));
        assert_eq!(s.mra, Some(0.9));
        assert_eq!(s.success, Some(true));
        // No prediction: zeros.
        let s = score_item(AnswerKind::Number, &gt, None);
        assert_eq!((s.mra, s.success, s.hit()), (Some(0.0), Some(false), 0.0));
    }

    #[test]
    fn accuracy_kinds() {
        let s = score_item(
            AnswerKind::MultipleChoice,
            &Prediction::Letter('B'),
            Some(&Prediction::Letter('B')),
        );
        assert_eq!(s.correct, Some(true));
        let s = score_item(
            AnswerKind::YesNo,
            &Prediction::YesNo(true),
            Some(&Prediction::YesNo(false)),
        );
        assert_eq!(s.correct, Some(false));
        let three = Prediction::Number(Quantity::number(3.0));
        let s = score_item(
            AnswerKind::NumberInt,
            &three,
            Some(&Prediction::Number(Quantity::number(3.0))),
        );
        assert_eq!(s.correct, Some(true));
        let s = score_item(
            AnswerKind::NumberInt,
            &three,
            Some(&Prediction::Number(Quantity::number(4.0))),
        );
        assert_eq!(s.correct, Some(false));
        let s = score_item(
            AnswerKind::Open,
            &Prediction::Text("Cat".into()),
            Some(&Prediction::Text(" cat ".into())),
        );
        assert_eq!(s.correct, Some(true));
    }

    #[test]
    fn summary_by_category() {
        let right = ItemScore {
            correct: Some(true),
            ..Default::default()
        };
        let wrong = ItemScore {
            correct: Some(false),
            ..Default::default()
        };
        let num = ItemScore {
            correct: None,
            mra: Some(0.6),
            success: Some(true),
            chance: None,
        };
        let s = summarize([("a", &right, true), ("a", &wrong, false), ("b", &num, true)]);
        // overall hit = (1 + 0 + 0.6) / 3 = 0.5333…
        assert!((s.overall.score - 1.6 / 3.0).abs() < 1e-12);
        assert_eq!(s.overall.accuracy, Some(0.5));
        assert_eq!(s.overall.mra, Some(0.6));
        assert_eq!(s.overall.success_rate, Some(1.0));
        assert_eq!(s.overall.unanswered, 1);
        assert_eq!(s.categories["a"].n, 2);
        assert_eq!(s.categories["b"].accuracy, None);
        assert_eq!(s.categories["b"].p_vs_chance, None);
    }

    #[test]
    fn p_at_least_hand_computed() {
        // Two fair coins: P(X ≥ 0) = 1, P(X ≥ 1) = 3/4, P(X ≥ 2) = 1/4, P(X ≥ 3) = 0.
        let coins = [0.5, 0.5];
        assert_eq!(p_at_least(&coins, 0), 1.0);
        assert!((p_at_least(&coins, 1) - 0.75).abs() < 1e-12);
        assert!((p_at_least(&coins, 2) - 0.25).abs() < 1e-12);
        assert_eq!(p_at_least(&coins, 3), 0.0);
        // A yes/no item and a four-option item both right: 1/2 · 1/4 = 1/8.
        assert!((p_at_least(&[0.5, 0.25], 2) - 0.125).abs() < 1e-12);
        // 8 of 20 four-option items right: binomial tail Σ_{j≥8} C(20,j) 0.25^j 0.75^(20−j) = 0.10181.
        assert!((p_at_least(&[0.25; 20], 8) - 0.101811).abs() < 1e-6);
        // At or below chance the p-value is large.
        assert!(p_at_least(&[0.25; 20], 5) > 0.5);
    }

    #[test]
    fn p_vs_chance_counts_items_with_chance() {
        let item = |correct| ItemScore {
            correct: Some(correct),
            chance: Some(0.5),
            ..Default::default()
        };
        let (r, w) = (item(true), item(false));
        let s = summarize([("yn", &r, true), ("yn", &r, true), ("yn", &w, true)]);
        // P(at least 2 of 3 fair coins) = 4/8.
        assert!((s.categories["yn"].p_vs_chance.unwrap() - 0.5).abs() < 1e-12);
    }
}
