//! Spatial questions with exact answers, computed from the scene geometry and the rendered frame.
//!
//! Coverage follows SIBench's single-image tasks (counting, existence, spatial relation,
//! relative distance, height, occlusion, spatial grid, object size) and Q-Spatial-Bench's metric
//! distances and sizes, plus colour/shape questions that depth and segmentation do not help with.
//! Every question stores a structured [`Query`] so its answer can be re-checked from geometry.
//!
//! Balance: multiple-choice options are shuffled; a yes/no question is asked only when the scene
//! allows both answers, and the answer is then a fair coin (the wording is drawn independently),
//! so neither the letter nor yes/no can be guessed from the answer distribution or the wording.
//!
//! Ground-truth definitions (the thresholds keep questions unambiguous):
//! - left/right and above/below compare the image projection of the objects' centres;
//! - "closer to the camera" compares Euclidean distances from the camera to the centres;
//! - distances between objects are centre-to-centre, in 3-D;
//! - heights and widths are the objects' metric extents;
//! - occlusion is the fraction of the object's in-image pixels hidden by other objects;
//! - the grid cell is that of the centroid of the object's visible pixels.

use rand::seq::SliceRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::render::{Frame, ObjectStats};
use crate::scene::{ObjColor, Object, Scene, ShapeKind};

/// Question category (our fine-grained task name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    Counting,
    Existence,
    /// Left/right or above/below in the image.
    SpatialRelation,
    /// In front of / behind, and which object is closest to the camera.
    DepthOrder,
    /// Which object is nearest to another one.
    RelativeDistance,
    /// Metric distance between two objects.
    AbsoluteDistance,
    /// Metric distance from the camera to an object.
    CameraDistance,
    /// Metric height or width of an object.
    ObjectSize,
    /// Which object is taller.
    SizeComparison,
    Occlusion,
    SpatialGrid,
    Color,
    Shape,
}

impl Category {
    /// All categories.
    pub const ALL: [Category; 13] = [
        Category::Counting,
        Category::Existence,
        Category::SpatialRelation,
        Category::DepthOrder,
        Category::RelativeDistance,
        Category::AbsoluteDistance,
        Category::CameraDistance,
        Category::ObjectSize,
        Category::SizeComparison,
        Category::Occlusion,
        Category::SpatialGrid,
        Category::Color,
        Category::Shape,
    ];

    /// The snake-case name written in datasets.
    pub fn name(self) -> &'static str {
        match self {
            Category::Counting => "counting",
            Category::Existence => "existence",
            Category::SpatialRelation => "spatial_relation",
            Category::DepthOrder => "depth_order",
            Category::RelativeDistance => "relative_distance",
            Category::AbsoluteDistance => "absolute_distance",
            Category::CameraDistance => "camera_distance",
            Category::ObjectSize => "object_size",
            Category::SizeComparison => "size_comparison",
            Category::Occlusion => "occlusion",
            Category::SpatialGrid => "spatial_grid",
            Category::Color => "color",
            Category::Shape => "shape",
        }
    }

    /// The closest SIBench single-image setting (or Q-Spatial / attribute group).
    pub fn benchmark_group(self) -> &'static str {
        match self {
            Category::Counting => "Counting",
            Category::Existence => "Existence",
            Category::SpatialRelation => "Spatial_Relation",
            Category::DepthOrder | Category::RelativeDistance => "relative_distance",
            Category::AbsoluteDistance | Category::CameraDistance => "QSpatial_distance",
            Category::ObjectSize => "Object_Size_Estimation",
            Category::SizeComparison => "Height",
            Category::Occlusion => "Occlusion",
            Category::SpatialGrid => "Spatial_Grid",
            Category::Color | Category::Shape => "Attribute",
        }
    }

    /// Whether auxiliary perception (depth/segmentation) helps with this category.
    pub fn flag(self) -> Flag {
        match self {
            Category::Counting
            | Category::DepthOrder
            | Category::RelativeDistance
            | Category::AbsoluteDistance
            | Category::CameraDistance
            | Category::ObjectSize
            | Category::Occlusion => Flag::Positive,
            Category::Color | Category::Shape => Flag::Negative,
            Category::Existence
            | Category::SpatialRelation
            | Category::SizeComparison
            | Category::SpatialGrid => Flag::Boundary,
        }
    }

    /// The perception aids that help, in the order a reasoning chain requests them.
    pub fn tools(self) -> &'static [Tool] {
        match self {
            Category::DepthOrder
            | Category::RelativeDistance
            | Category::AbsoluteDistance
            | Category::CameraDistance
            | Category::ObjectSize
            | Category::SizeComparison => &[Tool::Depth],
            Category::Counting
            | Category::Existence
            | Category::SpatialRelation
            | Category::SpatialGrid => &[Tool::Segmentation],
            Category::Occlusion => &[Tool::Segmentation, Tool::Depth],
            Category::Color | Category::Shape => &[],
        }
    }
}

/// The `flag` read by the exploration-guided reward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Flag {
    /// Auxiliary perception helps.
    Positive,
    /// It does not.
    Negative,
    /// Neither clearly.
    Boundary,
}

impl Flag {
    pub fn name(self) -> &'static str {
        match self {
            Flag::Positive => "positive",
            Flag::Negative => "negative",
            Flag::Boundary => "boundary",
        }
    }
}

/// A perception aid the model can generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tool {
    Depth,
    Segmentation,
}

/// How the answer is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnswerKind {
    /// Option letter.
    Mcq,
    /// "Yes" or "No".
    YesNo,
    /// A real number in [`Question::unit`].
    Number,
    /// An integer (counts).
    NumberInt,
}

impl AnswerKind {
    /// The SIBench/VLMEvalKit `type` value.
    pub fn type_name(self) -> &'static str {
        match self {
            AnswerKind::Mcq => "MCQ",
            AnswerKind::YesNo => "YN",
            AnswerKind::Number => "Number",
            AnswerKind::NumberInt => "Number_Int",
        }
    }
}

/// Length unit of a numeric answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    Meters,
    Centimeters,
}

impl Unit {
    /// Short symbol (`m`, `cm`).
    pub fn symbol(self) -> &'static str {
        match self {
            Unit::Meters => "m",
            Unit::Centimeters => "cm",
        }
    }

    /// The word used in questions.
    pub fn word(self) -> &'static str {
        match self {
            Unit::Meters => "meters",
            Unit::Centimeters => "centimeters",
        }
    }

    /// Formats a length given in metres: two decimals in metres, whole centimetres.
    pub fn format(self, metres: f32) -> String {
        match self {
            Unit::Meters => format!("{metres:.2}"),
            Unit::Centimeters => format!("{:.0}", metres * 100.0),
        }
    }
}

/// An image-space or depth relation between two objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Relation {
    LeftOf,
    RightOf,
    /// Higher in the image.
    Above,
    /// Lower in the image.
    Below,
    /// Closer to the camera.
    InFrontOf,
    /// Farther from the camera.
    Behind,
}

/// What a question asks, in structured form (object ids refer to [`Object::id`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "query", rename_all = "snake_case")]
pub enum Query {
    /// Number of objects with the given colour and/or shape.
    Count {
        color: Option<ObjColor>,
        kind: Option<ShapeKind>,
    },
    /// Whether an object with the given colour and/or shape exists.
    Exists {
        color: Option<ObjColor>,
        kind: Option<ShapeKind>,
    },
    /// Whether `a` stands in `relation` to `b`.
    Relation { a: u16, b: u16, relation: Relation },
    /// Which candidate is closest to the camera.
    ClosestToCamera { candidates: Vec<u16> },
    /// Which candidate is nearest to `anchor`.
    NearestTo { anchor: u16, candidates: Vec<u16> },
    /// Centre-to-centre distance.
    Distance { a: u16, b: u16 },
    /// Distance from the camera centre to the object's centre.
    CameraDistance { a: u16 },
    /// Metric height.
    Height { a: u16 },
    /// Metric width.
    Width { a: u16 },
    /// Which candidate is the tallest.
    Tallest { candidates: Vec<u16> },
    /// Whether `a` is partly hidden by another object.
    Occluded { a: u16 },
    /// The cell (row, col) of a `rows × cols` grid containing the object.
    GridCell { a: u16, rows: u32, cols: u32 },
    /// The colour of `a`.
    ColorOf { a: u16 },
    /// The shape of `a`.
    ShapeOf { a: u16 },
}

/// One question with its exact answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Question {
    /// Unique id: `<scene id>_q<k>`.
    pub id: String,
    pub scene_id: String,
    pub category: Category,
    pub kind: AnswerKind,
    pub flag: Flag,
    /// The question, without options or answer-format instructions.
    pub text: String,
    /// Option texts (multiple choice only), in letter order A, B, ...
    pub options: Vec<String>,
    /// The answer as graded: option letter, `Yes`/`No`, or the number in `unit`.
    pub answer: String,
    /// The answer in words (the option text, or the number with its unit).
    pub answer_text: String,
    pub unit: Option<Unit>,
    /// Exact value of numeric answers in metres (or the count), for graders that want it.
    pub value: Option<f64>,
    pub query: Query,
}

impl Question {
    /// The full prompt: question, lettered options and a short answer-format instruction.
    pub fn prompt(&self) -> String {
        // Worded exactly as `cooper-eval` asks a benchmark item (its `format_question`: the
        // question, the options, one instruction line), so that a model trained on the world is
        // asked the same way it is evaluated; a small model does not generalise across wordings.
        let instruction = match self.kind {
            AnswerKind::Mcq => return mcq_prompt(&self.text, &self.options),
            AnswerKind::YesNo => "Answer with Yes or No.".to_string(),
            AnswerKind::Number => match self.unit {
                Some(u) => format!("Answer with a single number in {}.", u.word()),
                None => "Answer with a single number.".to_string(),
            },
            AnswerKind::NumberInt => "Answer with a single number.".to_string(),
        };
        [self.text.trim().to_string(), instruction].join("\n")
    }
}

/// A multiple-choice prompt worded as `cooper-eval` asks one: the question, "Options:", a
/// lettered line an option, and the instruction.
pub fn mcq_prompt(text: &str, options: &[impl AsRef<str>]) -> String {
    let mut lines = vec![text.trim().to_string(), "Options:".to_string()];
    for (k, o) in options.iter().enumerate() {
        lines.push(format!("{}. {}", option_letter(k), o.as_ref().trim()));
    }
    lines.push(MCQ_INSTRUCTION.to_string());
    lines.join("\n")
}

const MCQ_INSTRUCTION: &str = "Answer with the letter of the correct option.";

/// The letter of option `k` (A, B, ...).
pub fn option_letter(k: usize) -> char {
    (b'A' + k as u8) as char
}

/// Objects that are clearly visible, whole and unoccluded enough to ask about.
pub(crate) fn min_pixels(frame: &Frame) -> u32 {
    (frame.width * frame.height / 800).max(8)
}

fn eligible(frame: &Frame, s: &ObjectStats) -> bool {
    s.in_frame && s.visible_px >= min_pixels(frame) && s.occluded_fraction() <= 0.5
}

/// Euclidean distance from the camera centre to an object's centre.
pub fn camera_distance(scene: &Scene, o: &Object) -> f32 {
    (o.center() - scene.camera.origin()).length()
}

/// Centre-to-centre distance.
pub fn object_distance(a: &Object, b: &Object) -> f32 {
    (a.center() - b.center()).length()
}

/// Context for building questions of one scene.
struct Ctx<'a> {
    scene: &'a Scene,
    frame: &'a Frame,
    /// Ids of objects clear enough to ask about.
    eligible: Vec<u16>,
}

impl<'a> Ctx<'a> {
    fn obj(&self, id: u16) -> &'a Object {
        self.scene
            .object(id)
            .expect("eligible ids come from the scene")
    }

    fn name(&self, id: u16) -> String {
        format!("the {}", self.obj(id).name())
    }

    fn stats(&self, id: u16) -> &'a ObjectStats {
        self.frame
            .stats_of(id)
            .expect("stats exist for every object")
    }

    fn pick(&self, rng: &mut ChaCha8Rng, n: usize) -> Option<Vec<u16>> {
        (self.eligible.len() >= n).then(|| {
            let mut ids = self.eligible.clone();
            ids.shuffle(rng);
            ids.truncate(n);
            ids
        })
    }

    fn projected(&self, id: u16) -> (f32, f32) {
        let (u, v, _) =
            self.scene
                .camera
                .project(self.obj(id).center())
                .unwrap_or((f32::NAN, f32::NAN, 0.0));
        (u, v)
    }
}

/// A question under construction (the id and scene are filled in by [`generate_questions`]).
struct Draft {
    category: Category,
    kind: AnswerKind,
    text: String,
    options: Vec<String>,
    answer: String,
    answer_text: String,
    unit: Option<Unit>,
    value: Option<f64>,
    query: Query,
}

fn choose<'s>(rng: &mut ChaCha8Rng, items: &[&'s str]) -> &'s str {
    items[rng.random_range(0..items.len())]
}

/// Builds a multiple-choice draft: `correct` plus `distractors`, shuffled.
fn mcq(
    rng: &mut ChaCha8Rng,
    category: Category,
    text: String,
    correct: String,
    distractors: Vec<String>,
    query: Query,
) -> Draft {
    let mut options = distractors;
    options.push(correct.clone());
    options.shuffle(rng);
    let pos = options
        .iter()
        .position(|o| *o == correct)
        .expect("the correct option was just inserted");
    Draft {
        category,
        kind: AnswerKind::Mcq,
        text,
        options,
        answer: option_letter(pos).to_string(),
        answer_text: correct,
        unit: None,
        value: None,
        query,
    }
}

fn yes_no(category: Category, text: String, answer: bool, query: Query) -> Draft {
    let a = if answer { "Yes" } else { "No" };
    Draft {
        category,
        kind: AnswerKind::YesNo,
        text,
        options: Vec::new(),
        answer: a.to_string(),
        answer_text: a.to_string(),
        unit: None,
        value: None,
        query,
    }
}

/// A numeric draft; the unit is stated in the question text so that every format carries it.
fn number(category: Category, text: String, metres: f32, unit: Unit, query: Query) -> Draft {
    let answer = unit.format(metres);
    Draft {
        category,
        kind: AnswerKind::Number,
        text: format!("{text} Give the answer in {}.", unit.word()),
        options: Vec::new(),
        answer_text: format!("{answer} {}", unit.symbol()),
        answer,
        unit: Some(unit),
        value: Some(metres as f64),
        query,
    }
}

/// "cyan cone", "cones", "cyan object": how the questions (and chains) name what they look for.
pub(crate) fn describe(color: Option<ObjColor>, kind: Option<ShapeKind>, plural: bool) -> String {
    let noun = match (kind, plural) {
        (Some(k), true) => k.plural(),
        (Some(k), false) => k.noun(),
        (None, true) => "objects",
        (None, false) => "object",
    };
    match color {
        Some(c) => format!("{} {noun}", c.name()),
        None => noun.to_string(),
    }
}

/// "a cyan cone", "an orange object".
pub(crate) fn with_article(what: &str) -> String {
    let article = if what.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    };
    format!("{article} {what}")
}

pub(crate) fn matches(o: &Object, color: Option<ObjColor>, kind: Option<ShapeKind>) -> bool {
    color.is_none_or(|c| o.color == c) && kind.is_none_or(|k| o.kind == k)
}

fn counting(c: &Ctx, rng: &mut ChaCha8Rng) -> Option<Draft> {
    let seed_obj = c.obj(
        *c.eligible
            .get(rng.random_range(0..c.eligible.len().max(1)))?,
    );
    let (color, kind) = match rng.random_range(0..3) {
        0 => (Some(seed_obj.color), None),
        1 => (None, Some(seed_obj.kind)),
        _ => (None, None),
    };
    let matching: Vec<&Object> = c
        .scene
        .objects
        .iter()
        .filter(|o| matches(o, color, kind))
        .collect();
    // Every counted object must be plainly visible, or the count is not answerable.
    if matching
        .iter()
        .any(|o| c.stats(o.id).visible_px < min_pixels(c.frame))
    {
        return None;
    }
    let n = matching.len();
    let what = describe(color, kind, true);
    let text = match rng.random_range(0..3) {
        0 => format!("How many {what} are there in the image?"),
        1 => format!("Count the {what} in the scene. How many are there?"),
        _ => format!("What is the number of {what} visible in the picture?"),
    };
    let query = Query::Count { color, kind };
    if rng.random_bool(0.5) {
        Some(Draft {
            category: Category::Counting,
            kind: AnswerKind::NumberInt,
            text,
            options: Vec::new(),
            answer: n.to_string(),
            answer_text: n.to_string(),
            unit: None,
            value: Some(n as f64),
            query,
        })
    } else {
        // Four consecutive counts containing n at a random position.
        // Four consecutive counts; n's position among them is uniform over the feasible ones.
        let lo = n - rng.random_range(0..=n.min(3));
        let opts: Vec<String> = (lo..lo + 4)
            .filter(|&k| k != n)
            .map(|k| k.to_string())
            .collect();
        Some(mcq(
            rng,
            Category::Counting,
            text,
            n.to_string(),
            opts,
            query,
        ))
    }
}

fn existence(c: &Ctx, rng: &mut ChaCha8Rng) -> Option<Draft> {
    // The form (colour and shape, shape only, colour only) is drawn first; the question is asked
    // only when both answers are possible in this scene, and then the answer is a fair coin, so
    // neither the wording nor the scene predicts it.
    let form = rng.random_range(0..3);
    let shape_of = |k: ShapeKind| (form != 2).then_some(k);
    let color_of = |col: ObjColor| (form != 1).then_some(col);
    let mut absent: Vec<(Option<ObjColor>, Option<ShapeKind>)> = Vec::new();
    for col in ObjColor::ALL {
        for k in ShapeKind::ALL {
            let combo = (color_of(col), shape_of(k));
            if !absent.contains(&combo)
                && !c.scene.objects.iter().any(|o| matches(o, combo.0, combo.1))
            {
                absent.push(combo);
            }
        }
    }
    if absent.is_empty() || c.eligible.is_empty() {
        return None;
    }
    let want = rng.random_bool(0.5);
    let (color, kind) = if want {
        let o = c.obj(c.eligible[rng.random_range(0..c.eligible.len())]);
        (color_of(o.color), shape_of(o.kind))
    } else {
        absent[rng.random_range(0..absent.len())]
    };
    let what = with_article(&describe(color, kind, false));
    let text = match rng.random_range(0..3) {
        0 => format!("Is there {what} in the image?"),
        1 => format!("Does the scene contain {what}?"),
        _ => format!("Can you see {what} in this picture?"),
    };
    Some(yes_no(
        Category::Existence,
        text,
        want,
        Query::Exists { color, kind },
    ))
}

fn spatial_relation(c: &Ctx, rng: &mut ChaCha8Rng) -> Option<Draft> {
    let ids = c.pick(rng, 2)?;
    let (a, b) = (ids[0], ids[1]);
    let (ua, va) = c.projected(a);
    let (ub, vb) = c.projected(b);
    let horizontal = rng.random_bool(0.5);
    let (delta, margin) = if horizontal {
        (ua - ub, 0.08 * c.frame.width as f32)
    } else {
        (va - vb, 0.08 * c.frame.height as f32)
    };
    if delta.is_nan() || delta.abs() < margin {
        return None;
    }
    let want = rng.random_bool(0.5);
    // Relation that holds: a left of b when ua < ub; a above b when va < vb.
    let holds = match (horizontal, delta < 0.0) {
        (true, true) => Relation::LeftOf,
        (true, false) => Relation::RightOf,
        (false, true) => Relation::Above,
        (false, false) => Relation::Below,
    };
    let relation = if want {
        holds
    } else {
        match holds {
            Relation::LeftOf => Relation::RightOf,
            Relation::RightOf => Relation::LeftOf,
            Relation::Above => Relation::Below,
            _ => Relation::Above,
        }
    };
    let phrase = match relation {
        Relation::LeftOf => choose(rng, &["to the left of", "on the left side of"]),
        Relation::RightOf => choose(rng, &["to the right of", "on the right side of"]),
        Relation::Above => choose(rng, &["above", "higher up in the image than"]),
        _ => choose(rng, &["below", "lower in the image than"]),
    };
    let text = match rng.random_range(0..2) {
        0 => format!("Is {} {phrase} {}?", c.name(a), c.name(b)),
        _ => format!("In the image, is {} {phrase} {}?", c.name(a), c.name(b)),
    };
    Some(yes_no(
        Category::SpatialRelation,
        text,
        want,
        Query::Relation { a, b, relation },
    ))
}

/// True when `d1` is clearly smaller than `d2`.
fn clearly_less(d1: f32, d2: f32) -> bool {
    d2 - d1 >= 0.4f32.max(0.1 * d2)
}

fn depth_order(c: &Ctx, rng: &mut ChaCha8Rng) -> Option<Draft> {
    let dist = |id: u16| camera_distance(c.scene, c.obj(id));
    let depth = |id: u16| c.scene.center_depth(id).unwrap_or(f32::INFINITY);
    if rng.random_bool(0.5) {
        let ids = c.pick(rng, 2)?;
        let (a, b) = (ids[0], ids[1]);
        let (near, far) = if dist(a) < dist(b) { (a, b) } else { (b, a) };
        if !clearly_less(dist(near), dist(far)) || depth(near) >= depth(far) {
            return None;
        }
        let want = rng.random_bool(0.5);
        let in_front = rng.random_bool(0.5);
        // Ask "is a in front of b" (or "behind") so that the answer is `want`.
        let a_near = want == in_front;
        let (x, y) = if a_near { (near, far) } else { (far, near) };
        let relation = if in_front {
            Relation::InFrontOf
        } else {
            Relation::Behind
        };
        let phrase = if in_front {
            choose(
                rng,
                &[
                    "in front of",
                    "closer to the camera than",
                    "nearer to the viewer than",
                ],
            )
        } else {
            choose(
                rng,
                &[
                    "behind",
                    "farther from the camera than",
                    "further away than",
                ],
            )
        };
        let text = format!("Is {} {phrase} {}?", c.name(x), c.name(y));
        Some(yes_no(
            Category::DepthOrder,
            text,
            want,
            Query::Relation {
                a: x,
                b: y,
                relation,
            },
        ))
    } else {
        let n = rng.random_range(2..=4usize).min(c.eligible.len());
        let mut ids = c.pick(rng, n.max(2))?;
        ids.sort_by(|p, q| dist(*p).total_cmp(&dist(*q)));
        if !clearly_less(dist(ids[0]), dist(ids[1])) || depth(ids[0]) >= depth(ids[1]) {
            return None;
        }
        let text = match rng.random_range(0..3) {
            0 => "Which of these objects is closest to the camera?".to_string(),
            1 => "Which object is nearest to the viewer?".to_string(),
            _ => "Among the following objects, which one is the closest to where the photo was taken?".to_string(),
        };
        let correct = c.obj(ids[0]).name();
        let others = ids[1..].iter().map(|i| c.obj(*i).name()).collect();
        let mut cand = ids.clone();
        cand.sort_unstable();
        Some(mcq(
            rng,
            Category::DepthOrder,
            text,
            correct,
            others,
            Query::ClosestToCamera { candidates: cand },
        ))
    }
}

fn relative_distance(c: &Ctx, rng: &mut ChaCha8Rng) -> Option<Draft> {
    let n = rng.random_range(3..=4usize).min(c.eligible.len());
    let ids = c.pick(rng, n.max(3))?;
    let anchor = ids[0];
    let mut cand = ids[1..].to_vec();
    let d = |id: u16| object_distance(c.obj(anchor), c.obj(id));
    cand.sort_by(|p, q| d(*p).total_cmp(&d(*q)));
    if d(cand[1]) - d(cand[0]) < 0.4f32.max(0.15 * d(cand[1])) {
        return None;
    }
    let text = match rng.random_range(0..3) {
        0 => format!("Which object is closest to {}?", c.name(anchor)),
        1 => format!(
            "Which of the following is nearest to {} in the scene?",
            c.name(anchor)
        ),
        _ => format!(
            "Measured in 3-D, which object is the shortest distance from {}?",
            c.name(anchor)
        ),
    };
    let correct = c.obj(cand[0]).name();
    let others = cand[1..].iter().map(|i| c.obj(*i).name()).collect();
    let mut sorted = cand.clone();
    sorted.sort_unstable();
    Some(mcq(
        rng,
        Category::RelativeDistance,
        text,
        correct,
        others,
        Query::NearestTo {
            anchor,
            candidates: sorted,
        },
    ))
}

fn absolute_distance(c: &Ctx, rng: &mut ChaCha8Rng) -> Option<Draft> {
    let ids = c.pick(rng, 2)?;
    let (a, b) = (ids[0], ids[1]);
    let d = object_distance(c.obj(a), c.obj(b));
    let unit = if d < 1.5 && rng.random_bool(0.5) {
        Unit::Centimeters
    } else {
        Unit::Meters
    };
    let text = match rng.random_range(0..3) {
        0 => format!(
            "What is the distance between the centers of {} and {}?",
            c.name(a),
            c.name(b)
        ),
        1 => format!(
            "How far apart are {} and {} (center to center)?",
            c.name(a),
            c.name(b)
        ),
        _ => format!(
            "Estimate the center-to-center distance from {} to {}.",
            c.name(a),
            c.name(b)
        ),
    };
    Some(number(
        Category::AbsoluteDistance,
        text,
        d,
        unit,
        Query::Distance { a, b },
    ))
}

fn camera_distance_q(c: &Ctx, rng: &mut ChaCha8Rng) -> Option<Draft> {
    let a = c.pick(rng, 1)?[0];
    let d = camera_distance(c.scene, c.obj(a));
    let text = match rng.random_range(0..3) {
        0 => format!("How far is the center of {} from the camera?", c.name(a)),
        1 => format!(
            "What is the distance from the camera to the center of {}?",
            c.name(a)
        ),
        _ => format!(
            "Estimate how far {} (its center) is from the viewer.",
            c.name(a)
        ),
    };
    Some(number(
        Category::CameraDistance,
        text,
        d,
        Unit::Meters,
        Query::CameraDistance { a },
    ))
}

fn object_size(c: &Ctx, rng: &mut ChaCha8Rng) -> Option<Draft> {
    let a = c.pick(rng, 1)?[0];
    let o = c.obj(a);
    let unit = if rng.random_bool(0.5) {
        Unit::Centimeters
    } else {
        Unit::Meters
    };
    if rng.random_bool(0.5) {
        let text = match rng.random_range(0..3) {
            0 => format!("How tall is {}?", c.name(a)),
            1 => format!("What is the height of {}?", c.name(a)),
            _ => format!("Estimate the height of {}.", c.name(a)),
        };
        Some(number(
            Category::ObjectSize,
            text,
            o.height(),
            unit,
            Query::Height { a },
        ))
    } else {
        // Width is asked only for shapes whose width is unambiguous (round or square plan).
        if o.kind == ShapeKind::Cuboid {
            return None;
        }
        let text = match rng.random_range(0..2) {
            0 => format!("How wide is {}?", c.name(a)),
            _ => format!(
                "What is the width (diameter or side length) of {}?",
                c.name(a)
            ),
        };
        Some(number(
            Category::ObjectSize,
            text,
            o.width(),
            unit,
            Query::Width { a },
        ))
    }
}

fn size_comparison(c: &Ctx, rng: &mut ChaCha8Rng) -> Option<Draft> {
    let n = rng.random_range(2..=3usize).min(c.eligible.len());
    let mut ids = c.pick(rng, n.max(2))?;
    let h = |id: u16| c.obj(id).height();
    ids.sort_by(|p, q| h(*q).total_cmp(&h(*p)));
    if h(ids[0]) < 1.15 * h(ids[1]) {
        return None;
    }
    let text = if ids.len() == 2 {
        // Name the pair in a random order, so the first-named object is not always the answer.
        let (x, y) = if rng.random_bool(0.5) {
            (ids[0], ids[1])
        } else {
            (ids[1], ids[0])
        };
        format!(
            "Which is taller in reality, {} or {}?",
            c.name(x),
            c.name(y)
        )
    } else {
        choose(
            rng,
            &[
                "Which of these objects is the tallest?",
                "Which object has the greatest real height?",
            ],
        )
        .to_string()
    };
    let correct = c.obj(ids[0]).name();
    let others = ids[1..].iter().map(|i| c.obj(*i).name()).collect();
    let mut cand = ids.clone();
    cand.sort_unstable();
    Some(mcq(
        rng,
        Category::SizeComparison,
        text,
        correct,
        others,
        Query::Tallest { candidates: cand },
    ))
}

fn occlusion(c: &Ctx, rng: &mut ChaCha8Rng) -> Option<Draft> {
    // Asked only when the scene has both a clearly occluded and a fully visible object, so the
    // answer (a fair coin) is not predictable from the scene.
    let min_px = min_pixels(c.frame);
    let shown = || {
        c.frame
            .stats
            .iter()
            .filter(move |s| s.in_frame && s.visible_px >= min_px)
    };
    let hidden: Vec<u16> = shown()
        .filter(|s| s.occluded_fraction() >= 0.2)
        .map(|s| s.id)
        .collect();
    let clear: Vec<u16> = shown()
        .filter(|s| s.occluded_fraction() == 0.0)
        .map(|s| s.id)
        .collect();
    if hidden.is_empty() || clear.is_empty() {
        return None;
    }
    let want = rng.random_bool(0.5);
    let pool = if want { &hidden } else { &clear };
    let a = pool[rng.random_range(0..pool.len())];
    let text = match rng.random_range(0..3) {
        0 => format!("Is {} partially hidden behind another object?", c.name(a)),
        1 => format!("Is {} occluded by any other object?", c.name(a)),
        _ => format!(
            "Does another object block part of the view of {}?",
            c.name(a)
        ),
    };
    Some(yes_no(
        Category::Occlusion,
        text,
        want,
        Query::Occluded { a },
    ))
}

/// Names of the cells of a 3 × 3 grid.
pub const GRID_NAMES: [[&str; 3]; 3] = [
    ["top-left", "top-center", "top-right"],
    ["middle-left", "center", "middle-right"],
    ["bottom-left", "bottom-center", "bottom-right"],
];

/// The 3 × 3 grid cell of an image position `(u, v)` in pixels.
pub(crate) fn grid_cell(frame: &Frame, [u, v]: [f32; 2]) -> &'static str {
    GRID_NAMES[grid_row(frame, v)][grid_col(frame, u)]
}

/// The 3 × 3 grid column (0 = left) of an image column `u` in pixels.
pub(crate) fn grid_col(frame: &Frame, u: f32) -> usize {
    ((3.0 * u / frame.width as f32) as usize).min(2)
}

/// The 3 × 3 grid row (0 = top) of an image row `v` in pixels.
pub(crate) fn grid_row(frame: &Frame, v: f32) -> usize {
    ((3.0 * v / frame.height as f32) as usize).min(2)
}

fn spatial_grid(c: &Ctx, rng: &mut ChaCha8Rng) -> Option<Draft> {
    let a = c.pick(rng, 1)?[0];
    let [u, v] = c.stats(a).centroid;
    let (w, h) = (c.frame.width as f32, c.frame.height as f32);
    // Keep clear of the grid lines.
    let near_line = |x: f32, size: f32| {
        [1.0, 2.0]
            .iter()
            .any(|k| (x - k * size / 3.0).abs() < 0.04 * size)
    };
    if near_line(u, w) || near_line(v, h) {
        return None;
    }
    let text = match rng.random_range(0..2) {
        0 => format!(
            "If the image is divided into a 3x3 grid, which cell contains {}?",
            c.name(a)
        ),
        _ => format!(
            "Split the picture into three rows and three columns. In which cell is {} located?",
            c.name(a)
        ),
    };
    let correct = grid_cell(c.frame, [u, v]).to_string();
    let mut others: Vec<String> = GRID_NAMES
        .iter()
        .flatten()
        .filter(|n| **n != correct)
        .map(|n| n.to_string())
        .collect();
    others.shuffle(rng);
    others.truncate(3);
    Some(mcq(
        rng,
        Category::SpatialGrid,
        text,
        correct,
        others,
        Query::GridCell {
            a,
            rows: 3,
            cols: 3,
        },
    ))
}

fn color_q(c: &Ctx, rng: &mut ChaCha8Rng) -> Option<Draft> {
    let a = c.pick(rng, 1)?[0];
    let o = c.obj(a);
    // Refer to it by shape, which must then be unique in the scene.
    if c.scene.objects.iter().filter(|x| x.kind == o.kind).count() != 1 {
        return None;
    }
    let text = match rng.random_range(0..2) {
        0 => format!("What color is the {}?", o.kind.noun()),
        _ => format!("Which color does the {} in the image have?", o.kind.noun()),
    };
    let mut others: Vec<String> = ObjColor::ALL
        .iter()
        .filter(|x| **x != o.color)
        .map(|x| x.name().to_string())
        .collect();
    others.shuffle(rng);
    others.truncate(3);
    Some(mcq(
        rng,
        Category::Color,
        text,
        o.color.name().to_string(),
        others,
        Query::ColorOf { a },
    ))
}

fn shape_q(c: &Ctx, rng: &mut ChaCha8Rng) -> Option<Draft> {
    let a = c.pick(rng, 1)?[0];
    let o = c.obj(a);
    if c.scene
        .objects
        .iter()
        .filter(|x| x.color == o.color)
        .count()
        != 1
    {
        return None;
    }
    let text = match rng.random_range(0..2) {
        0 => format!("What shape is the {} object?", o.color.name()),
        _ => format!(
            "What kind of shape is the {} object in the image?",
            o.color.name()
        ),
    };
    let mut others: Vec<String> = ShapeKind::ALL
        .iter()
        .filter(|x| **x != o.kind)
        .map(|x| x.noun().to_string())
        .collect();
    others.shuffle(rng);
    others.truncate(3);
    Some(mcq(
        rng,
        Category::Shape,
        text,
        o.kind.noun().to_string(),
        others,
        Query::ShapeOf { a },
    ))
}

fn build(category: Category, c: &Ctx, rng: &mut ChaCha8Rng) -> Option<Draft> {
    match category {
        Category::Counting => counting(c, rng),
        Category::Existence => existence(c, rng),
        Category::SpatialRelation => spatial_relation(c, rng),
        Category::DepthOrder => depth_order(c, rng),
        Category::RelativeDistance => relative_distance(c, rng),
        Category::AbsoluteDistance => absolute_distance(c, rng),
        Category::CameraDistance => camera_distance_q(c, rng),
        Category::ObjectSize => object_size(c, rng),
        Category::SizeComparison => size_comparison(c, rng),
        Category::Occlusion => occlusion(c, rng),
        Category::SpatialGrid => spatial_grid(c, rng),
        Category::Color => color_q(c, rng),
        Category::Shape => shape_q(c, rng),
    }
}

/// Generates up to `count` distinct questions about a rendered scene. Categories are drawn
/// uniformly; a draw that does not fit the scene is skipped and another category is drawn.
pub fn generate_questions(
    scene: &Scene,
    frame: &Frame,
    count: usize,
    rng: &mut ChaCha8Rng,
) -> Vec<Question> {
    let ctx = Ctx {
        scene,
        frame,
        eligible: frame
            .stats
            .iter()
            .filter(|s| eligible(frame, s))
            .map(|s| s.id)
            .collect(),
    };
    let mut out: Vec<Question> = Vec::with_capacity(count);
    for _ in 0..count * 8 {
        if out.len() >= count {
            break;
        }
        let category = Category::ALL[rng.random_range(0..Category::ALL.len())];
        let Some(d) = build(category, &ctx, rng) else {
            continue;
        };
        if out.iter().any(|q| q.text == d.text) {
            continue;
        }
        out.push(Question {
            id: format!("{}_q{}", scene.id, out.len()),
            scene_id: scene.id.clone(),
            category: d.category,
            kind: d.kind,
            flag: d.category.flag(),
            text: d.text,
            options: d.options,
            answer: d.answer,
            answer_text: d.answer_text,
            unit: d.unit,
            value: d.value,
            query: d.query,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::{generate_scene, WorldConfig};
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn questions_are_well_formed(seed in 0u64..1_000_000, index in 0u64..1_000) {
            let mut cfg = WorldConfig { seed, questions_per_scene: 10, ..Default::default() };
            cfg.scene.width = 48;
            cfg.scene.height = 48;
            let g = generate_scene(&cfg, index);
            for q in &g.questions {
                match q.kind {
                    AnswerKind::Mcq => {
                        prop_assert!(q.options.len() >= 2 && q.options.len() <= 4);
                        let letter = q.answer.chars().next().unwrap();
                        let k = (letter as u8 - b'A') as usize;
                        prop_assert_eq!(&q.options[k], &q.answer_text);
                        let mut unique = q.options.clone();
                        unique.sort();
                        unique.dedup();
                        prop_assert_eq!(unique.len(), q.options.len());
                    }
                    AnswerKind::YesNo => prop_assert!(q.answer == "Yes" || q.answer == "No"),
                    AnswerKind::Number => {
                        prop_assert!(q.unit.is_some());
                        prop_assert!(q.answer.parse::<f64>().unwrap() > 0.0);
                    }
                    AnswerKind::NumberInt => {
                        prop_assert!(q.answer.parse::<u32>().is_ok());
                    }
                }
                prop_assert_eq!(q.flag, q.category.flag());
                prop_assert!(q.id.starts_with(&g.scene.id));
            }
        }
    }
}
