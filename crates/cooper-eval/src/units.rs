//! Length units and quantities: parsing unit words and converting between millimetres, centimetres,
//! metres, inches and feet.
//!
//! Conversions are exact by definition: 1 in = 2.54 cm, 1 ft = 12 in = 30.48 cm (the factors
//! Q-Spatial-Bench uses). A numeric prediction is converted to its ground truth's unit before
//! scoring ([`comparable`]).

use std::fmt;

/// A length unit that answers and ground truths may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LengthUnit {
    Millimeter,
    Centimeter,
    Meter,
    Inch,
    Foot,
}

impl LengthUnit {
    /// Parses a unit word, case-insensitively: `mm`, `millimeter(s)`, `millimetre(s)`; `cm`,
    /// `centimeter(s)`, `centimetre(s)`; `m`, `meter(s)`, `metre(s)`; `in`, `inch`, `inches`, `"`,
    /// `″`; `ft`, `foot`, `feet`, `'`, `′`. A trailing full stop is ignored (`"ft."`).
    pub fn parse(word: &str) -> Option<Self> {
        let w = word.trim().trim_end_matches('.').to_ascii_lowercase();
        Some(match w.as_str() {
            "mm" | "millimeter" | "millimeters" | "millimetre" | "millimetres" => Self::Millimeter,
            "cm" | "centimeter" | "centimeters" | "centimetre" | "centimetres" => Self::Centimeter,
            "m" | "meter" | "meters" | "metre" | "metres" => Self::Meter,
            "in" | "inch" | "inches" | "\"" | "″" | "''" => Self::Inch,
            "ft" | "foot" | "feet" | "'" | "′" => Self::Foot,
            _ => return None,
        })
    }

    /// How many metres one of this unit is.
    pub fn in_meters(self) -> f64 {
        match self {
            Self::Millimeter => 0.001,
            Self::Centimeter => 0.01,
            Self::Meter => 1.0,
            Self::Inch => 0.0254,
            Self::Foot => 0.3048,
        }
    }

    /// The short symbol (`mm`, `cm`, `m`, `in`, `ft`).
    pub fn symbol(self) -> &'static str {
        match self {
            Self::Millimeter => "mm",
            Self::Centimeter => "cm",
            Self::Meter => "m",
            Self::Inch => "in",
            Self::Foot => "ft",
        }
    }
}

impl fmt::Display for LengthUnit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.symbol())
    }
}

/// A number with an optional length unit.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Quantity {
    pub value: f64,
    pub unit: Option<LengthUnit>,
}

impl Quantity {
    /// A plain number.
    pub fn number(value: f64) -> Self {
        Self { value, unit: None }
    }

    /// A length.
    pub fn length(value: f64, unit: LengthUnit) -> Self {
        Self {
            value,
            unit: Some(unit),
        }
    }

    /// The value in metres, when the quantity has a unit.
    pub fn meters(self) -> Option<f64> {
        self.unit.map(|u| self.value * u.in_meters())
    }

    /// The value expressed in `unit` (unchanged when the quantity has no unit of its own).
    pub fn value_in(self, unit: LengthUnit) -> f64 {
        match self.unit {
            Some(own) => self.value * own.in_meters() / unit.in_meters(),
            None => self.value,
        }
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.unit {
            Some(u) => write!(f, "{} {}", self.value, u),
            None => write!(f, "{}", self.value),
        }
    }
}

/// Puts a prediction and a ground truth on the same scale for numeric scoring.
///
/// Both with units: the prediction is converted to the ground truth's unit. One with a unit: the unitless one is taken to be in that unit
/// (a model asked "how many metres" that answers "2.5" means 2.5 m). Neither: the raw values.
/// Returns `(prediction, ground_truth)`.
pub fn comparable(pred: Quantity, gt: Quantity) -> (f64, f64) {
    match (pred.unit, gt.unit) {
        (Some(_), Some(g)) => (pred.value_in(g), gt.value),
        _ => (pred.value, gt.value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn parses_every_unit_spelling() {
        for w in ["mm", "Millimeter", "millimetres"] {
            assert_eq!(LengthUnit::parse(w), Some(LengthUnit::Millimeter), "{w}");
        }
        for w in ["cm", "CM", "centimeter", "centimetres"] {
            assert_eq!(LengthUnit::parse(w), Some(LengthUnit::Centimeter), "{w}");
        }
        for w in ["m", "meter", "Meters", "metre", "metres"] {
            assert_eq!(LengthUnit::parse(w), Some(LengthUnit::Meter), "{w}");
        }
        for w in ["in", "inch", "inches", "\"", "in."] {
            assert_eq!(LengthUnit::parse(w), Some(LengthUnit::Inch), "{w}");
        }
        for w in ["ft", "ft.", "foot", "feet", "'"] {
            assert_eq!(LengthUnit::parse(w), Some(LengthUnit::Foot), "{w}");
        }
        assert_eq!(LengthUnit::parse("chairs"), None);
        assert_eq!(LengthUnit::parse("km"), None);
    }

    #[test]
    fn converts_between_units() {
        // 150 cm = 1.5 m
        assert!(close(
            Quantity::length(150.0, LengthUnit::Centimeter).value_in(LengthUnit::Meter),
            1.5
        ));
        // 2 m = 200 cm
        assert!(close(
            Quantity::length(2.0, LengthUnit::Meter).value_in(LengthUnit::Centimeter),
            200.0
        ));
        // 3 ft = 3 * 30.48 cm = 91.44 cm
        assert!(close(
            Quantity::length(3.0, LengthUnit::Foot).value_in(LengthUnit::Centimeter),
            91.44
        ));
        // 10 in = 25.4 cm
        assert!(close(
            Quantity::length(10.0, LengthUnit::Inch).value_in(LengthUnit::Centimeter),
            25.4
        ));
        // 2 ft = 24 in
        assert!(close(
            Quantity::length(2.0, LengthUnit::Foot).value_in(LengthUnit::Inch),
            24.0
        ));
        // 55 mm = 5.5 cm
        assert!(close(
            Quantity::length(55.0, LengthUnit::Millimeter).value_in(LengthUnit::Centimeter),
            5.5
        ));
        // 1 m in feet = 1 / 0.3048 = 3.280839895...
        assert!(close(
            Quantity::length(1.0, LengthUnit::Meter).value_in(LengthUnit::Foot),
            3.280_839_895_013_123
        ));
        assert_eq!(Quantity::length(1.5, LengthUnit::Meter).meters(), Some(1.5));
        assert_eq!(Quantity::number(7.0).meters(), None);
    }

    #[test]
    fn comparable_uses_the_ground_truth_unit() {
        // pred 6 ft vs gt 180 cm: 6 * 30.48 = 182.88 cm
        let (p, g) = comparable(
            Quantity::length(6.0, LengthUnit::Foot),
            Quantity::length(180.0, LengthUnit::Centimeter),
        );
        assert!(close(p, 182.88) && close(g, 180.0));
        // unitless pred is read in the ground truth's unit
        let (p, g) = comparable(
            Quantity::number(2.5),
            Quantity::length(2.0, LengthUnit::Meter),
        );
        assert!(close(p, 2.5) && close(g, 2.0));
    }
}
