//! Template-written reasoning chains for supervised fine-tuning.
//!
//! An interleaved chain follows the layout of COOPER's inference loop: the input image and the
//! question (no loss), then turns `<think> … </think>` + a tool tag (loss), the ground-truth map
//! as the generated image, the official reflection prompt (no loss), and a final
//! `<think> … </think>` + `<answer> … \boxed{X} </answer>` turn (loss). Depth results are the
//! Spectral-coloured relative depth the loop feeds back; segmentation results are the ADE20K-style
//! colour map. Text-only chains hold one `<think>`/`<answer>` turn, and so do scene descriptions
//! ([`description_chain`]). The system prompt is not part of a chain: the training side prepends
//! it.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::questions::{
    camera_distance, describe, grid_cell, grid_col, grid_row, matches, min_pixels, object_distance,
    with_article, AnswerKind, Category, Flag, Query, Question, Relation, Tool, GRID_NAMES,
};
use crate::render::Frame;
use crate::scene::Scene;

/// The depth tool call, byte-exact as in the official code.
pub const DEPTH_PROMPT: &str =
    "<depth-estimation>Estimate the depth of the image and generate the depth map.</depth-estimation>";
/// The segmentation tool call, byte-exact as in the official code.
pub const SEGMENTATION_PROMPT: &str =
    "<segmentation>Segment the objects in the image with different colors.</segmentation>";
/// The prompt appended after each generated image (official `REFLECTION_PROMPT`, byte-exact;
/// downstream code matches it by string equality).
pub const REFLECTION_PROMPT: &str = "\nHere is the result of the depth-estimation/segmentation. Please note that the result of the depth-estimation/segmentation is not always accurate. Please check it carefully. \nNow please continue to think in <think>...</think> and then decide whether to continue to generate the depth-estimation/segmentation in <depth-estimation>...</depth-estimation>/<segmentation>...</segmentation> or give the answer in <answer>...</answer>.\n";

/// The request of a cell-listing chain.
pub const CELLS_PROMPT: &str = "What is in each cell of a 3x3 grid over the image?";

/// The request of a scene-description chain.
pub const DESCRIBE_PROMPT: &str = "Describe every object in the image: its color and shape, the cell of a 3x3 grid it is in, and how far it is from the camera.";

/// Which image an image item of a chain holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChainImage {
    /// The scene's RGB image.
    Input,
    /// Spectral-coloured relative depth ([`Frame::depth_colors`]).
    Depth,
    /// Semantic colour map ([`Frame::semantic_colors`]).
    Segmentation,
}

/// One item of a chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ChainItem {
    Text { value: String, need_loss: bool },
    Image { image: ChainImage },
}

/// A reasoning chain for one question.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Chain {
    pub question_id: String,
    /// True when the chain calls at least one tool.
    pub uses_tools: bool,
    pub items: Vec<ChainItem>,
}

fn text(value: String, need_loss: bool) -> ChainItem {
    ChainItem::Text { value, need_loss }
}

fn pick<'s>(rng: &mut ChaCha8Rng, items: &[&'s str]) -> &'s str {
    items[rng.random_range(0..items.len())]
}

/// What a chain's first thinking turn opens with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Opening {
    /// Nothing: the chain goes straight to its plan or reason.
    #[default]
    Plain,
    /// The picture's [`cell_listing`].
    CellListing,
    /// The picture's [`scene_description`], the text a description chain answers with.
    Description,
}

/// How the chains of a world are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ChainStyle {
    pub opening: Opening,
    /// Multiple-choice chains answer with the option's text (`\boxed{ red}`), which the
    /// evaluation maps back to its letter (exactly one option's text in the answer), instead of
    /// naming the letter. The default model never learnt to turn the option it names into that
    /// option's letter (docs/results.md); an answer in words is the model's own decision. Every
    /// box then opens with a space, see [`ChainStyle::boxed_answer`].
    pub option_text_answers: bool,
    /// With [`Opening::Description`], spatial-relation and depth-order yes/no chains reason from
    /// the description: both objects' places (or distances) as it gave them, the relation that
    /// holds, then the question's own phrase and the verdict ([`relation_from_description`]).
    /// Without it, their final thought states the verdict in the canonical phrase alone, and the
    /// twentieth run wrote "to the right of" in 125 of 137 such thoughts whatever the question
    /// asked (docs/results.md).
    pub relation_reasons: bool,
    /// Yes/no chains (existence, occlusion, spatial relation, depth order) open their first
    /// thought with the question word for word, what the picture shows of its objects and the
    /// verdict, in place of the description or listing ([`verdict_first_thought`]). The twenty-
    /// first run's verdicts, written after a description, named other objects and phrases than
    /// the question's: the small model copies well only from a few tokens back.
    pub verdict_first: bool,
    /// Existence and spatial-relation (and depth-order yes/no) chains say what the question
    /// looks for, copied from it, right before the final thought's verdict: "The question looks
    /// for a cyan object." or "The question compares the red cube with the blue sphere."
    /// ([`question_target`]). The twenty-first run's verdicts named objects the question did not
    /// ask about, while its colour chains, whose final thought names the question's shape word,
    /// copied that word from the question 106 times in 108: a copy of the target gives the
    /// lookup in the description something a few tokens back to match.
    pub target_first: bool,
}

impl ChainStyle {
    /// Whether these chains read answers off a scene description they open with: the chains
    /// [`description_lookup`] writes rows for. Verdict-first yes/no chains open without one.
    pub fn reads_description(&self) -> bool {
        self.opening == Opening::Description && !self.verdict_first
    }

    /// The graded answer of `q` as written in these chains: the option's text for multiple
    /// choice with [`ChainStyle::option_text_answers`], the question's answer otherwise.
    pub fn answer<'q>(&self, q: &'q Question) -> &'q str {
        if self.option_text_answers && q.kind == AnswerKind::Mcq {
            &q.answer_text
        } else {
            &q.answer
        }
    }

    /// The `\boxed{}` that ends a chain. Answering in words, the box opens with a space
    /// (`\boxed{ red}`): a byte-level BPE writes a word after a space (`Ġred`) and after `{` (`red`)
    /// as two unrelated tokens, so without the space the box cannot copy the thought's last word
    /// token for token, and the fifteenth run's boxes did not (docs/results.md). Letters keep the
    /// official form (`\boxed{B}`).
    pub fn boxed_answer(&self, q: &Question) -> String {
        if self.option_text_answers {
            format!("\\boxed{{ {}}}", self.answer(q))
        } else {
            format!("\\boxed{{{}}}", q.answer)
        }
    }
}

/// Words for a relative depth value, matching the Spectral colouring (near = red).
fn depth_tone(v: f32) -> &'static str {
    match v {
        v if v < 0.2 => "deep red",
        v if v < 0.4 => "orange",
        v if v < 0.6 => "pale yellow",
        v if v < 0.8 => "green",
        _ => "blue-violet",
    }
}

/// Object ids a query is about.
fn query_objects(q: &Query) -> Vec<u16> {
    match q {
        Query::Relation { a, b, .. } | Query::Distance { a, b } => vec![*a, *b],
        Query::ClosestToCamera { candidates } | Query::Tallest { candidates } => candidates.clone(),
        Query::NearestTo { anchor, candidates } => {
            let mut v = vec![*anchor];
            v.extend(candidates);
            v
        }
        Query::CameraDistance { a }
        | Query::Height { a }
        | Query::Width { a }
        | Query::Occluded { a }
        | Query::GridCell { a, .. }
        | Query::ColorOf { a }
        | Query::ShapeOf { a } => vec![*a],
        Query::Count { .. } | Query::Exists { .. } => Vec::new(),
    }
}

/// The objects a multiple-choice question offers, in the options' order when `in_option_order`
/// (so that a chain going through them reads the option lines again, one after another), otherwise
/// in the query's order. An option no candidate carries the name of is left out.
fn offered<'s>(
    q: &Question,
    scene: &'s Scene,
    candidates: &[u16],
    in_option_order: bool,
) -> Vec<&'s crate::scene::Object> {
    let objects: Vec<&crate::scene::Object> = candidates
        .iter()
        .filter_map(|id| scene.object(*id))
        .collect();
    if !in_option_order {
        return objects;
    }
    let mut left = objects;
    q.options
        .iter()
        .filter_map(|text| {
            let at = left.iter().position(|o| o.name() == *text)?;
            Some(left.remove(at))
        })
        .collect()
}

/// A sentence explaining the ground truth from the scene (what a careful observer would
/// conclude), used in the final thinking turn. With `in_option_order` the objects a question
/// offers are gone through in the options' order.
pub fn explain(q: &Question, scene: &Scene, frame: &Frame, in_option_order: bool) -> String {
    let name = |id: u16| {
        scene
            .object(id)
            .map_or_else(|| format!("object {id}"), |o| format!("the {}", o.name()))
    };
    match &q.query {
        Query::Count { .. } => format!("Counting the matching objects gives {}.", q.answer_text),
        Query::Exists { .. } => {
            if q.answer == "Yes" {
                "Such an object is present in the scene.".to_string()
            } else {
                "No object in the scene matches that description.".to_string()
            }
        }
        Query::Relation { a, b, relation } => {
            let phrase = relation_phrase(*relation);
            let neg = if q.answer == "Yes" { "" } else { "not " };
            format!("{} is {neg}{phrase} {}.", cap(&name(*a)), name(*b))
        }
        Query::ClosestToCamera { candidates } => {
            let parts: Vec<String> = offered(q, scene, candidates, in_option_order)
                .into_iter()
                .map(|o| {
                    format!(
                        "the {} is about {:.1} m away",
                        o.name(),
                        camera_distance(scene, o)
                    )
                })
                .collect();
            format!(
                "{}; so the closest is the {}.",
                cap(&parts.join(", ")),
                q.answer_text
            )
        }
        Query::NearestTo { anchor, candidates } => {
            let Some(a) = scene.object(*anchor) else {
                return String::new();
            };
            let parts: Vec<String> = offered(q, scene, candidates, in_option_order)
                .into_iter()
                .map(|o| {
                    format!(
                        "the {} is about {:.1} m from it",
                        o.name(),
                        object_distance(a, o)
                    )
                })
                .collect();
            format!(
                "Relative to {}, {}; the nearest is the {}.",
                name(*anchor),
                parts.join(", "),
                q.answer_text
            )
        }
        Query::Distance { a, b } => format!(
            "The centers of {} and {} are about {} apart.",
            name(*a),
            name(*b),
            q.answer_text
        ),
        Query::CameraDistance { a } => {
            format!(
                "The center of {} is about {} from the camera.",
                name(*a),
                q.answer_text
            )
        }
        Query::Height { a } => format!("{} is about {} tall.", cap(&name(*a)), q.answer_text),
        Query::Width { a } => format!("{} is about {} wide.", cap(&name(*a)), q.answer_text),
        Query::Tallest { candidates } => {
            let parts: Vec<String> = offered(q, scene, candidates, in_option_order)
                .into_iter()
                .map(|o| format!("the {} is about {:.2} m tall", o.name(), o.height()))
                .collect();
            format!(
                "{}; the tallest is the {}.",
                cap(&parts.join(", ")),
                q.answer_text
            )
        }
        Query::Occluded { a } => {
            let hidden = frame.stats_of(*a).map_or(0.0, |s| s.occluded_fraction());
            if q.answer == "Yes" {
                format!(
                    "About {:.0}% of {} is hidden by an object in front of it.",
                    hidden * 100.0,
                    name(*a)
                )
            } else {
                format!(
                    "{} is fully visible; nothing in front of it covers it.",
                    cap(&name(*a))
                )
            }
        }
        Query::GridCell { a, .. } => {
            format!(
                "{} lies in the {} cell of the grid.",
                cap(&name(*a)),
                q.answer_text
            )
        }
        Query::ColorOf { .. } => format!("The object is {}.", q.answer_text),
        Query::ShapeOf { .. } => format!("The object is a {}.", q.answer_text),
    }
}

fn cap(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

/// What a generated map shows about the question's objects.
fn observe(tool: Tool, q: &Question, scene: &Scene, frame: &Frame, rel: &[f32]) -> String {
    let ids = query_objects(&q.query);
    match tool {
        Tool::Depth => {
            let parts: Vec<String> = ids
                .iter()
                .filter_map(|id| Some((scene.object(*id)?, frame.stats_of(*id)?)))
                .filter(|(_, s)| s.visible_px > 0)
                .map(|(o, s)| {
                    let [u, v] = s.centroid;
                    let idx = (v as u32).min(frame.height - 1) * frame.width
                        + (u as u32).min(frame.width - 1);
                    format!("the {} appears {}", o.name(), depth_tone(rel[idx as usize]))
                })
                .collect();
            if parts.is_empty() {
                "The depth map shows the floor receding from red near the bottom to violet in the distance.".to_string()
            } else {
                format!(
                    "In the depth map (red is near, violet is far), {}.",
                    parts.join(", ")
                )
            }
        }
        Tool::Segmentation => {
            let regions = frame.stats.iter().filter(|s| s.visible_px > 0).count();
            let mut s = format!(
                "The segmentation map separates {regions} object region{}.",
                if regions == 1 { "" } else { "s" }
            );
            for id in ids {
                if let (Some(o), Some(st)) = (scene.object(id), frame.stats_of(id)) {
                    if st.visible_px > 0 {
                        s.push_str(&format!(
                            " The {} region sits in the {} part of the image.",
                            o.name(),
                            grid_cell(frame, st.centroid)
                        ));
                    }
                }
            }
            s
        }
    }
}

/// What the question is about, in the words of the first thinking turn.
fn topic(q: &Question) -> &'static str {
    match q.category {
        Category::Counting => "how many objects of a kind there are",
        Category::Existence => "whether a certain object is present",
        Category::SpatialRelation => "where two objects are relative to each other in the image",
        Category::DepthOrder => "which object is nearer to the camera",
        Category::RelativeDistance => "which object is nearest to another one",
        Category::AbsoluteDistance => "the metric distance between two objects",
        Category::CameraDistance => "how far an object is from the camera",
        Category::ObjectSize => "the real size of an object",
        Category::SizeComparison => "which object is taller in reality",
        Category::Occlusion => "whether an object is partly hidden",
        Category::SpatialGrid => "which part of the image an object is in",
        Category::Color => "the color of an object",
        Category::Shape => "the shape of an object",
    }
}

/// The first thinking turn of a chain that calls `tool`; `look` opens it (a cell listing, or
/// nothing).
fn plan(tool: Tool, q: &Question, look: &str, rng: &mut ChaCha8Rng) -> String {
    let why = match tool {
        Tool::Depth => pick(
            rng,
            &[
                "Judging distances from a single image is unreliable, so a depth map would help me compare how far things are.",
                "This depends on the 3-D layout; a depth map will show which surfaces are near and which are far.",
                "Depth estimation should make the distances in the scene explicit, which also lets me relate apparent size to real size.",
            ],
        ),
        Tool::Segmentation => pick(
            rng,
            &[
                "Separating the objects into regions will make them easier to find, count and locate.",
                "A segmentation map would outline each object clearly, including partly hidden ones.",
                "Segmenting the image should show exactly which pixels belong to which object.",
            ],
        ),
    };
    let open = pick(
        rng,
        &[
            "The question asks about",
            "I need to determine",
            "This is a question about",
        ],
    );
    format!(
        "<think> {look}{open} {}. {why} </think>\n{}",
        topic(q),
        match tool {
            Tool::Depth => DEPTH_PROMPT,
            Tool::Segmentation => SEGMENTATION_PROMPT,
        }
    )
}

fn final_turn(
    q: &Question,
    scene: &Scene,
    frame: &Frame,
    lead: &str,
    style: ChainStyle,
    rng: &mut ChaCha8Rng,
) -> String {
    let from_verdict = (style.verdict_first && verdict_first_thought(q, scene, frame).is_some())
        .then(|| format!("As I found, the answer is {}.", q.answer));
    // A verdict-first chain has the question in its first thought already.
    let target = (style.target_first && from_verdict.is_none())
        .then(|| question_target(q, scene))
        .flatten();
    let from_relation = || {
        (style.relation_reasons && style.opening == Opening::Description)
            .then(|| relation_from_description(q, scene, frame))
            .flatten()
    };
    let mut reason = from_verdict
        .or_else(from_relation)
        .or_else(|| explain_from_opening(q, scene, frame, style.opening))
        .unwrap_or_else(|| explain(q, scene, frame, style.option_text_answers));
    if let Some(target) = target {
        reason.insert_str(0, &format!("{target} "));
    }
    if q.kind == AnswerKind::Mcq && !style.option_text_answers {
        // Naming the option right after the answer's words lets the answer turn copy the letter
        // from the model's own text, instead of matching the words against the options at once,
        // which the small default model did not learn (docs/results.md).
        reason.push_str(&format!(" That matches option {}.", q.answer));
    }
    let closing = pick(
        rng,
        &[
            "The answer is",
            "So the answer is",
            "Therefore, the answer is",
        ],
    );
    format!(
        // The reason is said once, in the thinking turn; the answer turn only commits to it, which
        // keeps the loss tokens of a small model on the decision rather than on a repeated sentence.
        "<think> {lead}{reason} </think>\n<answer> {closing} {}. </answer>",
        style.boxed_answer(q)
    )
}

fn opening(q: &Question) -> Vec<ChainItem> {
    vec![
        ChainItem::Image {
            image: ChainImage::Input,
        },
        text(q.prompt(), false),
    ]
}

/// With an opening, counts and existence are read off it: the matching objects are named again,
/// in the opening's order, before the count or the verdict. A description also answers colour and
/// shape: the object is named as the question names it, next to the attribute the description
/// gave it. Other questions keep [`explain`]'s sentence (`None`).
fn explain_from_opening(
    q: &Question,
    scene: &Scene,
    frame: &Frame,
    opening: Opening,
) -> Option<String> {
    let (color, kind) = match q.query {
        Query::Count { color, kind } | Query::Exists { color, kind } => (color, kind),
        Query::ColorOf { a } if opening == Opening::Description => {
            let o = scene.object(a)?;
            return Some(format!(
                "The description names the {}: the {} is {}.",
                o.name(),
                o.kind.noun(),
                q.answer_text
            ));
        }
        Query::ShapeOf { a } if opening == Opening::Description => {
            let o = scene.object(a)?;
            return Some(format!(
                "The description names the {}: the {} object is a {}.",
                o.name(),
                o.color.name(),
                q.answer_text
            ));
        }
        _ => return None,
    };
    // Only counts and existence need the objects in the opening's order.
    let (order, noun) = match opening {
        Opening::Plain => return None,
        Opening::CellListing => (in_listing_order(scene, frame), "listing"),
        Opening::Description => (
            visible_left_to_right(scene, frame)
                .into_iter()
                .map(|(o, _)| o)
                .collect(),
            "description",
        ),
    };
    let names: Vec<String> = order
        .into_iter()
        .filter(|o| matches(o, color, kind))
        .map(|o| format!("the {}", o.name()))
        .collect();
    let named = match names.as_slice() {
        [] => String::new(),
        [one] => one.clone(),
        [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
    };
    Some(match (&q.query, names.len()) {
        (Query::Count { .. }, n) => format!("The {noun} names {named}: {n} in all."),
        (_, 0) => format!("Nothing in the {noun} matches."),
        _ => format!("The {noun} names {named}, which matches."),
    })
}

/// What an existence or relation question asks about, in the question's words: "The question
/// looks for a cyan object." or "The question compares the red cube with the blue sphere."
/// `None` for other questions.
fn question_target(q: &Question, scene: &Scene) -> Option<String> {
    match q.query {
        Query::Exists { color, kind } => Some(format!(
            "The question looks for {}.",
            with_article(&describe(color, kind, false))
        )),
        Query::Relation { a, b, .. } => Some(format!(
            "The question compares the {} with the {}.",
            scene.object(a)?.name(),
            scene.object(b)?.name()
        )),
        _ => None,
    }
}

/// The words a relation is stated in when it holds (the question may use a synonym).
fn relation_phrase(relation: Relation) -> &'static str {
    match relation {
        Relation::LeftOf => "to the left of",
        Relation::RightOf => "to the right of",
        Relation::Above => "above",
        Relation::Below => "below",
        Relation::InFrontOf => "closer to the camera than",
        Relation::Behind => "farther from the camera than",
    }
}

fn opposite(relation: Relation) -> Relation {
    match relation {
        Relation::LeftOf => Relation::RightOf,
        Relation::RightOf => Relation::LeftOf,
        Relation::Above => Relation::Below,
        Relation::Below => Relation::Above,
        Relation::InFrontOf => Relation::Behind,
        Relation::Behind => Relation::InFrontOf,
    }
}

/// A relation question's yes/no verdict worked out from the scene description: where the
/// description put both objects (left-to-right order and cells, or distances), the relation that
/// holds, then the question's own phrase, copied from it, and the answer.
///
/// "The description names the blue cone (middle-left cell) before the red box (center cell), so
/// the blue cone is to the left of the red box. The question asks if it is to the right of the
/// red box: No."
///
/// `None` (the caller falls back to [`explain`]) when an object is missing from the description
/// or the description's order or distances would not show the relation the geometry gives.
fn relation_from_description(q: &Question, scene: &Scene, frame: &Frame) -> Option<String> {
    let Query::Relation { a, b, relation } = q.query else {
        return None;
    };
    let yes = q.answer == "Yes";
    let holds = if yes { relation } else { opposite(relation) };
    let seen = visible_left_to_right(scene, frame);
    let at = |id: u16| seen.iter().position(|(o, _)| o.id == id);
    let (ia, ib) = (at(a)?, at(b)?);
    let ((oa, sa), (ob, sb)) = (seen[ia], seen[ib]);
    let cell = |s: &crate::render::ObjectStats| grid_cell(frame, s.centroid);
    let evidence = match holds {
        Relation::LeftOf | Relation::RightOf => {
            if (ia < ib) != (holds == Relation::LeftOf) {
                return None;
            }
            let ((first, fs), (second, ss)) = if ia < ib {
                ((oa, sa), (ob, sb))
            } else {
                ((ob, sb), (oa, sa))
            };
            format!(
                "The description names the {} ({} cell) before the {} ({} cell)",
                first.name(),
                cell(fs),
                second.name(),
                cell(ss)
            )
        }
        Relation::Above | Relation::Below => {
            if (sa.centroid[1] < sb.centroid[1]) != (holds == Relation::Above) {
                return None;
            }
            let same_row = if grid_row(frame, sa.centroid[1]) == grid_row(frame, sb.centroid[1]) {
                ", both in the same row"
            } else {
                ""
            };
            format!(
                "The description puts the {} in the {} cell and the {} in the {} cell{same_row}",
                oa.name(),
                cell(sa),
                ob.name(),
                cell(sb)
            )
        }
        Relation::InFrontOf | Relation::Behind => {
            // The description's distances, rounded as it writes them.
            let metres = |o| format!("{:.1}", camera_distance(scene, o));
            let (da, db) = (camera_distance(scene, oa), camera_distance(scene, ob));
            if (da < db) != (holds == Relation::InFrontOf) || metres(oa) == metres(ob) {
                return None;
            }
            format!(
                "The description puts the {} about {} m and the {} about {} m from the camera",
                oa.name(),
                metres(oa),
                ob.name(),
                metres(ob)
            )
        }
    };
    // The question's own words between the two names ("on the left side of", "nearer to the
    // viewer than"); the canonical phrase when the wording cannot be found.
    let (na, nb) = (format!("the {} ", oa.name()), format!(" the {}", ob.name()));
    let asked = q
        .text
        .find(&na)
        .map(|i| &q.text[i + na.len()..])
        .and_then(|rest| rest.find(&nb).map(|j| rest[..j].trim()))
        .filter(|p| !p.is_empty())
        .unwrap_or(relation_phrase(relation));
    Some(format!(
        "{evidence}, so the {} is {} the {}. The question asks if it is {asked} the {}: {}.",
        oa.name(),
        relation_phrase(holds),
        ob.name(),
        ob.name(),
        q.answer
    ))
}

/// A yes/no question's verdict, worked out next to the question: "The question: Is the blue cone
/// to the left of the red box? The blue cone is in the middle-left cell and the red box in the
/// center cell, so the answer is Yes." The evidence is where the picture puts the question's
/// objects (cells, with which is further left or higher when they share a column or row), their
/// distances from the camera, a matching object and its cell, or how much of the object is
/// hidden. `None` for other questions, and when the evidence would not show the answer (an
/// object not visible, centroids that disagree with the objects' centres); those chains keep
/// the usual opening.
fn verdict_first_thought(q: &Question, scene: &Scene, frame: &Frame) -> Option<String> {
    if q.kind != AnswerKind::YesNo {
        return None;
    }
    let seen = |id: u16| {
        let s = frame.stats_of(id).filter(|s| s.visible_px > 0)?;
        Some((scene.object(id)?, s))
    };
    let cell = |s: &crate::render::ObjectStats| grid_cell(frame, s.centroid);
    let yes = q.answer == "Yes";
    let evidence = match q.query {
        Query::Relation { a, b, relation } => {
            let ((oa, sa), (ob, sb)) = (seen(a)?, seen(b)?);
            let holds = if yes { relation } else { opposite(relation) };
            match holds {
                Relation::InFrontOf | Relation::Behind => {
                    let (da, db) = (camera_distance(scene, oa), camera_distance(scene, ob));
                    let (ma, mb) = (format!("{da:.1}"), format!("{db:.1}"));
                    if (da < db) != (holds == Relation::InFrontOf) || ma == mb {
                        return None;
                    }
                    format!(
                        "The {} is about {ma} m from the camera and the {} about {mb} m",
                        oa.name(),
                        ob.name()
                    )
                }
                _ => {
                    let horizontal = matches!(holds, Relation::LeftOf | Relation::RightOf);
                    let axis = usize::from(!horizontal);
                    let a_first = sa.centroid[axis] < sb.centroid[axis];
                    if a_first != matches!(holds, Relation::LeftOf | Relation::Above) {
                        return None;
                    }
                    let band = |s: &crate::render::ObjectStats| {
                        if horizontal {
                            grid_col(frame, s.centroid[0])
                        } else {
                            grid_row(frame, s.centroid[1])
                        }
                    };
                    let finer = if band(sa) != band(sb) {
                        String::new()
                    } else {
                        let how = match (horizontal, a_first) {
                            (true, true) => "further left",
                            (true, false) => "further right",
                            (false, true) => "higher",
                            (false, false) => "lower",
                        };
                        format!(", the {} a little {how}", oa.name())
                    };
                    format!(
                        "The {} is in the {} cell and the {} in the {} cell{finer}",
                        oa.name(),
                        cell(sa),
                        ob.name(),
                        cell(sb)
                    )
                }
            }
        }
        Query::Exists { color, kind } => {
            let found = visible_left_to_right(scene, frame)
                .into_iter()
                .find(|(o, _)| matches(o, color, kind));
            match (found, yes) {
                (Some((o, s)), true) => {
                    format!("The {} in the {} cell is one", o.name(), cell(s))
                }
                (None, false) => "I find none in the picture".to_string(),
                _ => return None,
            }
        }
        Query::Occluded { a } => {
            let (o, s) = seen(a)?;
            let hidden = s.occluded_fraction();
            match (hidden > 0.0, yes) {
                (true, true) => format!(
                    "The {} in the {} cell is about {:.0}% hidden by an object in front of it",
                    o.name(),
                    cell(s),
                    hidden * 100.0
                ),
                (false, false) => {
                    format!("The {} in the {} cell is fully visible", o.name(), cell(s))
                }
                _ => return None,
            }
        }
        _ => return None,
    };
    Some(format!(
        "The question: {} {evidence}, so the answer is {}.",
        q.text, q.answer
    ))
}

/// An interleaved chain: positive questions always call their tools, negative ones never
/// (they answer directly and say why), boundary ones call them with probability 1/2.
///
/// `style.opening` puts the picture's cell listing or description at the start of the first
/// thinking turn (what the model can learn to read off the picture), and counts and existence
/// (with a description, colour and shape too) are answered from it; the random draws are the
/// same whatever the style.
pub fn interleaved_chain(
    q: &Question,
    scene: &Scene,
    frame: &Frame,
    style: ChainStyle,
    rng: &mut ChaCha8Rng,
) -> Chain {
    let look = opening_thought(q, scene, frame, style);
    let tools: Vec<Tool> = match q.flag {
        Flag::Positive => q.category.tools().to_vec(),
        Flag::Negative => Vec::new(),
        Flag::Boundary => {
            if rng.random_bool(0.5) {
                q.category.tools().to_vec()
            } else {
                Vec::new()
            }
        }
    };
    if tools.is_empty() {
        let lead = tool_free_lead(q, rng);
        return tool_free_chain(q, scene, frame, &format!("{look}{lead}"), style, rng);
    }
    let rel = frame.relative_depth();
    let mut items = opening(q);
    let mut notes = String::new();
    for (k, tool) in tools.iter().enumerate() {
        let call = if k == 0 {
            plan(*tool, q, &look, rng)
        } else {
            format!(
                "<think> {notes}To be sure, I also want the {} result. </think>\n{}",
                match tool {
                    Tool::Depth => "depth",
                    Tool::Segmentation => "segmentation",
                },
                match tool {
                    Tool::Depth => DEPTH_PROMPT,
                    Tool::Segmentation => SEGMENTATION_PROMPT,
                }
            )
        };
        items.push(text(call, true));
        items.push(ChainItem::Image {
            image: match tool {
                Tool::Depth => ChainImage::Depth,
                Tool::Segmentation => ChainImage::Segmentation,
            },
        });
        items.push(text(REFLECTION_PROMPT.to_string(), false));
        notes = format!("{} ", observe(*tool, q, scene, frame, &rel));
    }
    let check = pick(
        rng,
        &[
            "The generated map looks consistent with the image. ",
            "Checking it against the photo, the map is plausible. ",
            "The result agrees with what I see in the image. ",
        ],
    );
    items.push(text(
        final_turn(q, scene, frame, &format!("{notes}{check}"), style, rng),
        true,
    ));
    Chain {
        question_id: q.id.clone(),
        uses_tools: true,
        items,
    }
}

/// Why an interleaved chain answers without a tool: appearance for the questions that never call
/// one, a clear picture otherwise.
fn tool_free_lead(q: &Question, rng: &mut ChaCha8Rng) -> &'static str {
    if q.flag == Flag::Negative {
        pick(
            rng,
            &[
                "This is about appearance, which I can read directly from the image; depth or segmentation would not add anything. ",
                "Neither a depth map nor a segmentation map tells me about colour or form, so I will answer from the image itself. ",
            ],
        )
    } else {
        "The image alone is clear enough here, so I will answer without extra tools. "
    }
}

/// A description lookup: the question with no picture, and the thinking turn a tool-free
/// interleaved chain of `style` writes for it, whose opening (the scene's description, after the
/// restated options when there are some) is given and whose reading of the answer off it is
/// learnt. Returns the chain and the number of characters given: the learnt part starts at the
/// space after the opening. `None` unless the chains open with the description and `q`'s answer is
/// read off it (existence, counts, colour and shape; spatial relation and depth order with
/// [`ChainStyle::relation_reasons`]), and with [`ChainStyle::verdict_first`], whose yes/no chains
/// open without the description.
///
/// A chain's verdict is read off the description it wrote itself, so it can be no better than
/// that reading; the embedded model's existence verdicts ignored whether its own description
/// named the question's object (docs/results.md, twenty-fourth run). Chains teach that reading
/// once per chain, after a description they learn at the same time; these rows, a tenth of a
/// chain's cost, teach it alone, as the restatement rows taught the options' copy.
pub fn description_lookup(
    q: &Question,
    scene: &Scene,
    frame: &Frame,
    style: ChainStyle,
    rng: &mut ChaCha8Rng,
) -> Option<(Chain, usize)> {
    if !style.reads_description() {
        return None;
    }
    let read_off = explain_from_opening(q, scene, frame, style.opening).is_some()
        || (style.relation_reasons && relation_from_description(q, scene, frame).is_some());
    if !read_off {
        return None;
    }
    let look = opening_thought(q, scene, frame, style);
    let lead = tool_free_lead(q, rng);
    let thought = final_turn(q, scene, frame, &format!("{look}{lead}"), style, rng);
    let given = format!("<think> {}", look.trim_end()).chars().count();
    let chain = Chain {
        question_id: format!("{}-lookup", q.id),
        uses_tools: false,
        items: vec![text(q.prompt(), false), text(thought, true)],
    };
    Some((chain, given))
}

/// Where, in characters, a chain's first thinking turn holds the objects its scene description
/// lists: from the space after "From left to right:" (or "I can see one object:") to the end of
/// the opening. `WorldConfig::given_descriptions` gives the model that list as context instead of
/// teaching it there; the turn's start (`<think>`, a multiple-choice chain's restated options,
/// "I can see 4 objects. From left to right:") stays learnt, so that the chain still learns to
/// open with a description, and so does everything after the list, which opens with a space,
/// where the byte-level pre-tokenizer splits the whole text too. `None` for chains that open
/// without a description and for scenes with no object to list.
pub fn described_objects_chars(
    q: &Question,
    scene: &Scene,
    frame: &Frame,
    style: ChainStyle,
) -> Option<std::ops::Range<usize>> {
    if !style.reads_description() {
        return None;
    }
    let opening = format!(
        "<think> {}",
        opening_thought(q, scene, frame, style).trim_end()
    );
    let description = scene_description(scene, frame);
    let at = opening.rfind(&description)?;
    let colon = description.find(':')?;
    let from = opening[..at + colon + 1].chars().count();
    Some(from..opening.chars().count())
}

/// The opening of a chain's first thinking turn, followed by a space (nothing for
/// [`Opening::Plain`] chains that answer with letters). Answering in words, a multiple-choice
/// chain first restates its options ("The options are: red, cyan, white."), next to the prompt's
/// option lines, so that the final turn can copy its answer from the model's own words rather
/// than from the prompt (a copy the default model does badly over a whole chain,
/// docs/results.md).
fn opening_thought(q: &Question, scene: &Scene, frame: &Frame, style: ChainStyle) -> String {
    if let Some(verdict) = style
        .verdict_first
        .then(|| verdict_first_thought(q, scene, frame))
        .flatten()
    {
        return format!("{verdict} ");
    }
    let mut look = match style.opening {
        Opening::Plain => String::new(),
        Opening::CellListing => format!("{} ", cell_listing(scene, frame)),
        Opening::Description => format!("{} ", scene_description(scene, frame)),
    };
    if style.option_text_answers {
        if let Some(restated) = restatement(q) {
            look.insert_str(0, &format!("{restated} "));
        }
    }
    look
}

/// A multiple-choice question's options, restated word for word ("The options are: red, cyan,
/// white."); `None` for other questions.
pub fn restatement(q: &Question) -> Option<String> {
    (q.kind == AnswerKind::Mcq).then(|| format!("The options are: {}.", q.options.join(", ")))
}

/// A text-only chain: one thinking turn and the answer (opened as `style` says, as in
/// [`interleaved_chain`]).
pub fn text_chain(
    q: &Question,
    scene: &Scene,
    frame: &Frame,
    style: ChainStyle,
    rng: &mut ChaCha8Rng,
) -> Chain {
    let look = opening_thought(q, scene, frame, style);
    let lead = pick(
        rng,
        &[
            "Let me look at the image carefully. ",
            "I will reason about the scene step by step. ",
            "Looking at the objects in the picture: ",
        ],
    );
    tool_free_chain(q, scene, frame, &format!("{look}{lead}"), style, rng)
}

/// A chain that answers at once: the opening and one final turn led by `lead`.
fn tool_free_chain(
    q: &Question,
    scene: &Scene,
    frame: &Frame,
    lead: &str,
    style: ChainStyle,
    rng: &mut ChaCha8Rng,
) -> Chain {
    let mut items = opening(q);
    items.push(text(final_turn(q, scene, frame, lead, style, rng), true));
    Chain {
        question_id: q.id.clone(),
        uses_tools: false,
        items,
    }
}

/// A scene-description chain: the input image, [`DESCRIBE_PROMPT`], and one turn that names every
/// visible object from left to right with its colour, shape, grid cell and camera distance.
///
/// The questions supervise an object's appearance only when one asks about it, a few times per
/// scene; BAGEL learns to read such attributes in pretraining (captioning), which the default model
/// never had. One description per scene ties every object's pixels to its words. Deterministic:
/// it draws no random numbers, so adding it leaves the other chains of a scene unchanged.
pub fn description_chain(scene_id: &str, scene: &Scene, frame: &Frame) -> Chain {
    let n = visible_left_to_right(scene, frame).len();
    let plural = if n == 1 { "" } else { "s" };
    single_turn_chain(
        format!("{scene_id}-describe"),
        DESCRIBE_PROMPT,
        format!(
            "<think> {} </think>\n<answer> The image shows \\boxed{{{n}}} object{plural}. </answer>",
            scene_description(scene, frame)
        ),
    )
}

/// "I can see 3 objects. From left to right: the red box, in the top-left cell, about 2.1 m from
/// the camera; ...": every visible object from left to right with its colour, shape, grid cell and
/// camera distance. The thought of a description chain, and with [`Opening::Description`] the
/// opening of every chain's first thinking turn.
pub fn scene_description(scene: &Scene, frame: &Frame) -> String {
    let parts: Vec<String> = visible_left_to_right(scene, frame)
        .iter()
        .map(|(o, s)| {
            let hidden = if s.occluded_fraction() > 0.25 {
                ", partly hidden"
            } else {
                ""
            };
            format!(
                "the {}, in the {} cell, about {:.1} m from the camera{hidden}",
                o.name(),
                grid_cell(frame, s.centroid),
                camera_distance(scene, o)
            )
        })
        .collect();
    match parts.len() {
        0 => "I can see no objects, only the floor and the walls.".to_string(),
        1 => format!("I can see one object: {}.", parts[0]),
        n => format!(
            "I can see {n} objects. From left to right: {}.",
            parts.join("; ")
        ),
    }
}

/// The objects the questions may name (at least `min_pixels` visible), left to right.
fn visible_left_to_right<'a>(
    scene: &'a Scene,
    frame: &'a Frame,
) -> Vec<(&'a crate::scene::Object, &'a crate::render::ObjectStats)> {
    let mut seen: Vec<_> = scene
        .objects
        .iter()
        .filter_map(|o| Some((o, frame.stats_of(o.id)?)))
        .filter(|(_, s)| s.visible_px >= min_pixels(frame))
        .collect();
    seen.sort_by(|a, b| a.1.centroid[0].total_cmp(&b.1.centroid[0]));
    seen
}

/// A cell-listing chain: the input image, [`CELLS_PROMPT`], and one turn that names, for each
/// cell of the 3x3 grid in reading order, the objects whose centre lies in it (left to right) or
/// "nothing", then the count.
///
/// A description names objects by appearance in an order the model must work out; a listing ties
/// each word to a fixed place in the picture, which the ViT's position table gives the model for
/// free. It was the first text that taught the default model to look at all (docs/results.md).
/// Deterministic, like the description.
pub fn cells_chain(scene_id: &str, scene: &Scene, frame: &Frame) -> Chain {
    let listed = visible_left_to_right(scene, frame).len();
    single_turn_chain(
        format!("{scene_id}-cells"),
        CELLS_PROMPT,
        format!(
            "<think> {} </think>\n<answer> The image shows \\boxed{{{listed}}} objects. </answer>",
            cell_listing(scene, frame),
        ),
    )
}

/// The visible objects in the order a cell listing names them: cells in reading order, left to
/// right within a cell.
fn in_listing_order<'a>(scene: &'a Scene, frame: &'a Frame) -> Vec<&'a crate::scene::Object> {
    objects_by_cell(scene, frame)
        .into_iter()
        .flat_map(|(_, here)| here)
        .collect()
}

/// Each cell of the 3x3 grid in reading order with the visible objects whose centre lies in it,
/// left to right.
fn objects_by_cell<'a>(
    scene: &'a Scene,
    frame: &'a Frame,
) -> Vec<(&'static str, Vec<&'a crate::scene::Object>)> {
    let seen = visible_left_to_right(scene, frame);
    GRID_NAMES
        .iter()
        .flatten()
        .map(|cell| {
            let here = seen
                .iter()
                .filter(|(_, s)| grid_cell(frame, s.centroid) == *cell)
                .map(|(o, _)| *o)
                .collect();
            (*cell, here)
        })
        .collect()
}

/// "top-left: nothing; top-center: red box; ...; bottom-right: nothing.": for each cell of the
/// 3x3 grid in reading order, the visible objects whose centre lies in it (left to right), or
/// "nothing". The answer of a cell-listing chain, and with listing thoughts the opening of every
/// chain's first thinking turn.
pub fn cell_listing(scene: &Scene, frame: &Frame) -> String {
    let cells: Vec<String> = objects_by_cell(scene, frame)
        .into_iter()
        .map(|(cell, here)| {
            let what = if here.is_empty() {
                "nothing".to_string()
            } else {
                let names: Vec<String> = here.iter().map(|o| o.name()).collect();
                names.join(" and ")
            };
            format!("{cell}: {what}")
        })
        .collect();
    format!("{}.", cells.join("; "))
}

/// The input image, a request (no loss) and one answer turn (loss): a chain that answers no
/// benchmark question and calls no tool.
fn single_turn_chain(question_id: String, request: &str, answer: String) -> Chain {
    Chain {
        question_id,
        uses_tools: false,
        items: vec![
            ChainItem::Image {
                image: ChainImage::Input,
            },
            text(request.to_string(), false),
            text(answer, true),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::{generate_scene, scene_rng, WorldConfig};

    /// The official format reward's patterns (full match, dot matches newline).
    fn format_ok(chain: &Chain) -> bool {
        let tool = regex::Regex::new(
            r"(?s)^(<think>.*?</think>\s*<segmentation>.*?</segmentation>|<think>.*?</think>\s*<depth-estimation>.*?</depth-estimation>)$",
        )
        .unwrap();
        let answer = regex::Regex::new(r"(?s)^<think>.*?</think>\s*<answer>.*?</answer>$").unwrap();
        let texts: Vec<&str> = chain.items[2..]
            .iter()
            .filter_map(|i| match i {
                ChainItem::Text { value, .. } if value != REFLECTION_PROMPT => Some(value.trim()),
                _ => None,
            })
            .collect();
        let (last, rest) = texts.split_last().unwrap();
        answer.is_match(last) && rest.iter().all(|t| tool.is_match(t))
    }

    #[test]
    fn chains_follow_the_official_turn_format_and_tool_policy() {
        let cfg = WorldConfig {
            seed: 4,
            questions_per_scene: 8,
            ..Default::default()
        };
        let mut seen_tools = 0;
        let styles = [Opening::Plain, Opening::CellListing, Opening::Description]
            .into_iter()
            .flat_map(|opening| {
                [false, true].map(|option_text_answers| ChainStyle {
                    opening,
                    option_text_answers,
                    relation_reasons: option_text_answers && opening == Opening::Description,
                    verdict_first: option_text_answers && opening == Opening::CellListing,
                    target_first: !option_text_answers,
                })
            });
        for (i, style) in (0..12).flat_map(|i| styles.clone().map(move |s| (i, s))) {
            let g = generate_scene(&cfg, i);
            let mut rng = scene_rng(4, i, 2);
            for q in &g.questions {
                let c = interleaved_chain(q, &g.scene, &g.frame, style, &mut rng);
                assert!(format_ok(&c), "{c:#?}");
                match q.flag {
                    Flag::Positive => assert!(c.uses_tools),
                    Flag::Negative => assert!(!c.uses_tools),
                    Flag::Boundary => {}
                }
                let images = c
                    .items
                    .iter()
                    .filter(|i| matches!(i, ChainItem::Image { .. }))
                    .count();
                let calls = c
                    .items
                    .iter()
                    .filter(|i| matches!(i, ChainItem::Text { value, .. } if value.contains(DEPTH_PROMPT) || value.contains(SEGMENTATION_PROMPT)))
                    .count();
                assert_eq!(images, calls + 1, "one generated image per tool call");
                seen_tools += calls;
                let last = match c.items.last().unwrap() {
                    ChainItem::Text { value, need_loss } => {
                        assert!(need_loss);
                        value
                    }
                    _ => panic!("a chain ends with text"),
                };
                let letter = q.kind == AnswerKind::Mcq && !style.option_text_answers;
                if !style.option_text_answers {
                    assert!(last.contains(&format!("\\boxed{{{}}}", q.answer)));
                } else if q.kind == AnswerKind::Mcq {
                    assert_option_text_answer(q, last);
                } else {
                    assert!(last.contains(&format!("\\boxed{{ {}}}", q.answer)));
                }
                // A reason that answers with a letter names its option, and only such a one does.
                let names_option = last.contains(&format!("That matches option {}.", q.answer));
                assert_eq!(names_option, letter, "{last}");
                assert_eq!(last.contains("That matches option"), names_option, "{last}");
                let t = text_chain(q, &g.scene, &g.frame, style, &mut rng);
                assert!(format_ok(&t) && t.items.len() == 3);
            }
        }
        assert!(seen_tools > 0);
    }

    /// An answer in words boxes the right option's text, and that text picks out one option the
    /// way the evaluation's last letter rule reads it: the right option's text occurs in the box,
    /// and every other option's text that occurs there is part of the right one.
    fn assert_option_text_answer(q: &Question, last: &str) {
        let right = &q.options[(q.answer.as_bytes()[0] - b'A') as usize];
        assert_eq!(right, &q.answer_text);
        let boxed = format!("\\boxed{{ {right}}}");
        assert!(last.contains(&boxed), "{boxed} in {last}");
        for other in q.options.iter().filter(|o| *o != right) {
            assert!(
                !right.contains(other.as_str()) || other.len() < right.len(),
                "{other} against {right}"
            );
        }
    }

    /// The loss turns of a chain, in order.
    fn turns(c: &Chain) -> Vec<&str> {
        c.items
            .iter()
            .filter_map(|i| match i {
                ChainItem::Text {
                    value,
                    need_loss: true,
                } => Some(value.as_str()),
                _ => None,
            })
            .collect()
    }

    /// Chains that open with the scene description and answer in words (no other option).
    const DESCRIBED_IN_WORDS: ChainStyle = ChainStyle {
        opening: Opening::Description,
        option_text_answers: true,
        relation_reasons: false,
        verdict_first: false,
        target_first: false,
    };

    /// Every interleaved and text-only chain of 40 scenes of `seed` (12 questions each), written
    /// in the `plain` and the `styled` style with the same draws; `check` gets each pair's
    /// trained turns (as many in both, which is asserted first).
    fn for_each_chain_pair(
        seed: u64,
        plain: ChainStyle,
        styled: ChainStyle,
        mut check: impl FnMut(&crate::dataset::GeneratedScene, &Question, &[&str], &[&str]),
    ) {
        let cfg = WorldConfig {
            seed,
            questions_per_scene: 12,
            ..Default::default()
        };
        for i in 0..40 {
            let g = generate_scene(&cfg, i);
            let (mut plain_rng, mut styled_rng) = (scene_rng(seed, i, 2), scene_rng(seed, i, 2));
            for q in &g.questions {
                for make in [interleaved_chain, text_chain] {
                    let before = make(q, &g.scene, &g.frame, plain, &mut plain_rng);
                    let after = make(q, &g.scene, &g.frame, styled, &mut styled_rng);
                    let (before, after) = (turns(&before), turns(&after));
                    assert_eq!(before.len(), after.len());
                    check(&g, q, &before, &after);
                }
            }
        }
    }

    #[test]
    fn listing_thoughts_open_the_first_turn_and_answer_counts_from_the_listing() {
        let cfg = WorldConfig {
            seed: 5,
            questions_per_scene: 10,
            ..Default::default()
        };
        let (mut counts, mut exists) = (0, 0);
        for i in 0..16 {
            let g = generate_scene(&cfg, i);
            let listing = cell_listing(&g.scene, &g.frame);
            let (mut plain_rng, mut look_rng) = (scene_rng(5, i, 2), scene_rng(5, i, 2));
            for q in &g.questions {
                for make in [interleaved_chain, text_chain] {
                    let listed = ChainStyle {
                        opening: Opening::CellListing,
                        ..Default::default()
                    };
                    let plain = make(q, &g.scene, &g.frame, Default::default(), &mut plain_rng);
                    let look = make(q, &g.scene, &g.frame, listed, &mut look_rng);
                    let (plain, look) = (turns(&plain), turns(&look));
                    assert_eq!(plain.len(), look.len());
                    let first = look[0]
                        .strip_prefix(&format!("<think> {listing} "))
                        .unwrap_or_else(|| panic!("{listing} opens {}", look[0]));
                    let last = look.last().unwrap();
                    match q.query {
                        Query::Count { .. } => {
                            assert!(
                                last.contains(&format!(": {} in all.", q.answer_text)),
                                "{last}"
                            );
                            counts += 1;
                        }
                        Query::Exists { .. } => {
                            let found = !last.contains("Nothing in the listing matches.");
                            assert_eq!(found, q.answer == "Yes", "{last}");
                            exists += 1;
                        }
                        _ => {
                            // Same draws, same words: only the listing was added.
                            let single = look.len() == 1;
                            let first_plain = plain[0].strip_prefix("<think> ").unwrap();
                            assert_eq!(first, first_plain, "{}", q.text);
                            if !single {
                                assert_eq!(plain[1..], look[1..]);
                            }
                        }
                    }
                }
            }
        }
        assert!(
            counts > 0 && exists > 0,
            "{counts} counts, {exists} existence questions"
        );
    }

    #[test]
    fn description_thoughts_open_the_first_turn_and_answer_appearance_from_it() {
        let cfg = WorldConfig {
            seed: 6,
            questions_per_scene: 12,
            ..Default::default()
        };
        let style = DESCRIBED_IN_WORDS;
        let (mut appearance, mut counts, mut option_lists) = (0, 0, 0);
        for i in 0..24 {
            let g = generate_scene(&cfg, i);
            let description = scene_description(&g.scene, &g.frame);
            let mut rng = scene_rng(6, i, 2);
            for q in &g.questions {
                // Multiple choice first restates its options, word for word.
                let restated = match q.kind {
                    AnswerKind::Mcq => format!("The options are: {}. ", q.options.join(", ")),
                    _ => String::new(),
                };
                for make in [interleaved_chain, text_chain] {
                    let c = make(q, &g.scene, &g.frame, style, &mut rng);
                    let turns = turns(&c);
                    assert!(
                        turns[0].starts_with(&format!("<think> {restated}{description} ")),
                        "{restated}{description} opens {}",
                        turns[0]
                    );
                    let last = turns.last().unwrap();
                    match q.query {
                        Query::ClosestToCamera { .. }
                        | Query::NearestTo { .. }
                        | Query::Tallest { .. } => {
                            // The final thought goes through the offered objects in the
                            // options' order.
                            let lower = last.to_lowercase();
                            let at: Vec<usize> = q
                                .options
                                .iter()
                                .map(|o| {
                                    let named = format!("the {o} is about");
                                    lower
                                        .find(&named)
                                        .unwrap_or_else(|| panic!("{named} in {last}"))
                                })
                                .collect();
                            assert!(
                                at.windows(2).all(|w| w[0] < w[1]),
                                "{:?} in {last}",
                                q.options
                            );
                            option_lists += 1;
                        }
                        Query::ColorOf { a } | Query::ShapeOf { a } => {
                            let o = g.scene.object(a).unwrap();
                            // The object as the description names it, then its attribute in the
                            // words of the answer.
                            assert!(last.contains(&format!("names the {}:", o.name())), "{last}");
                            assert!(last.contains(&format!("\\boxed{{ {}}}", q.answer_text)));
                            assert!(description.contains(&format!("the {},", o.name())));
                            appearance += 1;
                        }
                        Query::Count { .. } => {
                            assert!(last.contains(&format!(": {} in all.", q.answer_text)));
                            assert!(last.contains("The description names"), "{last}");
                            counts += 1;
                        }
                        _ => {}
                    }
                }
            }
        }
        assert!(
            appearance > 0 && counts > 0 && option_lists > 0,
            "{appearance} {counts} {option_lists}"
        );
    }

    /// The first 12 scenes of seed 9 with the single answer turn of `make`'s chain for each,
    /// after checking the chain's format and id (`<scene>-<suffix>`).
    fn single_turn_chains(
        make: fn(&str, &Scene, &Frame) -> Chain,
        suffix: &str,
    ) -> Vec<(crate::dataset::GeneratedScene, String)> {
        let cfg = WorldConfig {
            seed: 9,
            ..Default::default()
        };
        (0..12)
            .map(|i| {
                let g = generate_scene(&cfg, i);
                let c = make(&g.scene.id, &g.scene, &g.frame);
                assert!(format_ok(&c) && !c.uses_tools, "{c:#?}");
                assert_eq!(c.question_id, format!("{}-{suffix}", g.scene.id));
                let ChainItem::Text { value, need_loss } = &c.items[2] else {
                    panic!("the answer turn is text")
                };
                assert!(need_loss);
                let value = value.clone();
                (g, value)
            })
            .collect()
    }

    #[test]
    fn relation_reasons_work_the_verdict_out_from_the_description() {
        let plain = DESCRIBED_IN_WORDS;
        let reasoned = ChainStyle {
            relation_reasons: true,
            ..plain
        };
        // Reasoned chains by the relation that holds: left/right, above/below, depth.
        let mut reasoned_by_axis = [0; 3];
        for_each_chain_pair(9, plain, reasoned, |g, q, before, after| {
            let description = scene_description(&g.scene, &g.frame);
            let n = after.len() - 1;
            assert_eq!(before[..n], after[..n]);
            let Query::Relation { a, b, relation } = q.query else {
                assert_eq!(before[n], after[n]);
                return;
            };
            let last = after[n];
            if last == before[n] {
                return; // the description could not show it: the plain sentence
            }
            let name = |id: u16| g.scene.object(id).unwrap().name();
            let (na, nb) = (name(a), name(b));
            // The question's own phrase, then the verdict.
            let tail = format!(" the {nb}: {}.", q.answer);
            let asked = last
                .split("The question asks if it is ")
                .nth(1)
                .and_then(|rest| rest.split(&tail).next())
                .filter(|_| last.contains(&tail))
                .unwrap_or_else(|| panic!("no verdict in {last}"));
            assert!(
                q.text.contains(&format!("the {na} {asked} the {nb}")),
                "'{asked}' is not the phrase of {}",
                q.text
            );
            let holds = if q.answer == "Yes" {
                relation
            } else {
                opposite(relation)
            };
            let stated = format!("so the {na} is {} the {nb}.", relation_phrase(holds));
            assert!(last.contains(&stated), "{last}");
            // The evidence is the description's own.
            let position = |name: &str| {
                description
                    .find(&format!("the {name}, in the "))
                    .unwrap_or_else(|| panic!("{name} not in {description}"))
            };
            match holds {
                Relation::LeftOf | Relation::RightOf => {
                    let a_first = position(&na) < position(&nb);
                    assert_eq!(a_first, holds == Relation::LeftOf, "{description}");
                    let (first, second) = if a_first { (&na, &nb) } else { (&nb, &na) };
                    assert!(last.contains(&format!("names the {first} (")), "{last}");
                    assert!(last.contains(&format!(") before the {second} (")));
                    reasoned_by_axis[0] += 1;
                }
                Relation::Above | Relation::Below => {
                    let cell = |name: &str| {
                        let rest = &description[position(name)..];
                        let rest = &rest[rest.find(", in the ").unwrap() + 9..];
                        rest[..rest.find(" cell").unwrap()].to_string()
                    };
                    let (ca, cb) = (cell(&na), cell(&nb));
                    assert!(last.contains(&format!(
                        "puts the {na} in the {ca} cell and the {nb} in the {cb} cell"
                    )));
                    let row = |c: &str| GRID_NAMES.iter().position(|r| r.contains(&c)).unwrap();
                    if row(&ca) == row(&cb) {
                        assert!(last.contains("both in the same row"), "{last}");
                    } else {
                        assert_eq!(row(&ca) < row(&cb), holds == Relation::Above);
                    }
                    reasoned_by_axis[1] += 1;
                }
                Relation::InFrontOf | Relation::Behind => {
                    let metres = |name: &str| -> f32 {
                        let rest = &last
                            [last.find(&format!("the {name} about ")).unwrap() + name.len() + 11..];
                        rest[..rest.find(" m").unwrap()].parse().unwrap()
                    };
                    let (da, db) = (metres(&na), metres(&nb));
                    assert_eq!(da < db, holds == Relation::InFrontOf, "{last}");
                    for d in [da, db] {
                        assert!(description.contains(&format!("about {d:.1} m from")));
                    }
                    reasoned_by_axis[2] += 1;
                }
            }
        });
        assert!(
            reasoned_by_axis.iter().all(|&n| n > 0),
            "reasoned chains by axis: {reasoned_by_axis:?}"
        );
    }

    #[test]
    fn target_first_chains_copy_what_the_question_looks_for_before_the_verdict() {
        let plain = ChainStyle {
            relation_reasons: true,
            ..DESCRIBED_IN_WORDS
        };
        let targeted = ChainStyle {
            target_first: true,
            ..plain
        };
        let (mut existence, mut relation) = (0, 0);
        for_each_chain_pair(13, plain, targeted, |g, q, before, after| {
            let n = after.len() - 1;
            assert_eq!(before[..n], after[..n]);
            let target = match q.query {
                Query::Exists { .. } => {
                    let what = after[n]
                        .split("The question looks for ")
                        .nth(1)
                        .and_then(|rest| rest.split('.').next())
                        .unwrap_or_else(|| panic!("no target in {}", after[n]));
                    // The question's own words, article included.
                    let in_question = [' ', '?']
                        .iter()
                        .any(|end| q.text.contains(&format!(" {what}{end}")));
                    assert!(in_question, "{what} / {}", q.text);
                    existence += 1;
                    format!("The question looks for {what}.")
                }
                Query::Relation { a, b, .. } => {
                    let name = |id: u16| g.scene.object(id).unwrap().name();
                    for id in [a, b] {
                        assert!(q.text.contains(&format!("the {}", name(id))), "{}", q.text);
                    }
                    relation += 1;
                    format!(
                        "The question compares the {} with the {}.",
                        name(a),
                        name(b)
                    )
                }
                _ => {
                    assert_eq!(before[n], after[n]);
                    return;
                }
            };
            // The target sentence opens the verdict's reason; nothing else changes.
            let at = after[n]
                .find(&target)
                .unwrap_or_else(|| panic!("{target} not in {}", after[n]));
            let without = format!("{}{}", &after[n][..at], &after[n][at + target.len() + 1..]);
            assert_eq!(without, before[n]);
            let verdict = &after[n][at + target.len()..];
            assert!(
                verdict.contains(&format!("\\boxed{{ {}}}", q.answer)),
                "{verdict}"
            );
        });
        assert!(existence > 0 && relation > 0, "{existence} {relation}");
    }

    #[test]
    fn description_lookups_give_the_description_and_learn_the_reading_off_it() {
        let style = ChainStyle {
            relation_reasons: true,
            ..DESCRIBED_IN_WORDS
        };
        let cfg = WorldConfig {
            seed: 17,
            questions_per_scene: 12,
            ..Default::default()
        };
        let mut read = std::collections::BTreeMap::<&str, usize>::new();
        for i in 0..30 {
            let g = generate_scene(&cfg, i);
            let mut rng = scene_rng(17, i, 3);
            for q in &g.questions {
                let reason = explain_from_opening(q, &g.scene, &g.frame, Opening::Description)
                    .or_else(|| relation_from_description(q, &g.scene, &g.frame));
                let lookup = description_lookup(q, &g.scene, &g.frame, style, &mut rng);
                let (Some(reason), Some((chain, given))) = (reason, lookup.clone()) else {
                    assert!(lookup.is_none(), "a lookup for {}", q.text);
                    continue;
                };
                *read.entry(q.category.name()).or_default() += 1;
                // No picture: the prompt, then one learnt thought.
                let [ChainItem::Text {
                    value: prompt,
                    need_loss: false,
                }, ChainItem::Text {
                    value: thought,
                    need_loss: true,
                }] = chain.items.as_slice()
                else {
                    panic!("{:?}", chain.items);
                };
                assert_eq!(*prompt, q.prompt());
                let split = thought.char_indices().nth(given).unwrap().0;
                let (opening, learnt) = thought.split_at(split);
                let look = opening_thought(q, &g.scene, &g.frame, style);
                assert_eq!(opening, format!("<think> {}", look.trim_end()));
                assert!(opening.contains(&scene_description(&g.scene, &g.frame)));
                assert!(
                    learnt.starts_with(' ') && learnt.contains(&reason),
                    "{learnt}"
                );
                assert!(learnt.ends_with(&format!("{}. </answer>", style.boxed_answer(q))));
            }
        }
        for category in [
            "existence",
            "counting",
            "color",
            "shape",
            "spatial_relation",
        ] {
            assert!(read.get(category).copied().unwrap_or(0) > 0, "{read:?}");
        }
        // Chains that do not open with the description, or whose yes/no ones open with the
        // verdict, have no description to read.
        let g = generate_scene(&cfg, 0);
        let q = &g.questions[0];
        let mut rng = scene_rng(17, 0, 3);
        for other in [
            ChainStyle::default(),
            ChainStyle {
                verdict_first: true,
                ..style
            },
        ] {
            assert!(description_lookup(q, &g.scene, &g.frame, other, &mut rng).is_none());
        }
    }

    #[test]
    fn verdict_first_chains_answer_yes_no_questions_next_to_the_question() {
        let plain = DESCRIBED_IN_WORDS;
        let verdicts = ChainStyle {
            verdict_first: true,
            ..plain
        };
        let mut by_category: std::collections::BTreeMap<&str, usize> = Default::default();
        for_each_chain_pair(11, plain, verdicts, |g, q, before, after| {
            let opened = format!("<think> The question: {} ", q.text);
            if q.kind != AnswerKind::YesNo || !after[0].starts_with(&opened) {
                // Other questions, and yes/no ones the picture cannot show: unchanged.
                assert_eq!(before, after, "{}", q.text);
                return;
            }
            let verdict = format!(", so the answer is {}.", q.answer);
            let first = &after[0][opened.len()..];
            let evidence = &first[..first.find(&verdict).expect(first)];
            let last = after.last().unwrap();
            assert!(
                last.contains(&format!("As I found, the answer is {}.", q.answer)),
                "{last}"
            );
            assert!(
                last.contains(&format!("\\boxed{{ {}}}", q.answer)),
                "{last}"
            );
            let name = |id: u16| g.scene.object(id).unwrap().name();
            let cell = |id: u16| grid_cell(&g.frame, g.frame.stats_of(id).unwrap().centroid);
            let yes = q.answer == "Yes";
            match q.query {
                Query::Relation { a, b, relation } => {
                    let holds = if yes { relation } else { opposite(relation) };
                    if matches!(holds, Relation::InFrontOf | Relation::Behind) {
                        let metres = |id: u16| {
                            format!(
                                "{:.1}",
                                camera_distance(&g.scene, g.scene.object(id).unwrap())
                            )
                        };
                        assert_eq!(
                            evidence,
                            format!(
                                "The {} is about {} m from the camera and the {} about {} m",
                                name(a),
                                metres(a),
                                name(b),
                                metres(b)
                            )
                        );
                        let nearer =
                            metres(a).parse::<f32>().unwrap() < metres(b).parse::<f32>().unwrap();
                        assert_eq!(nearer, holds == Relation::InFrontOf);
                    } else {
                        let cells = format!(
                            "The {} is in the {} cell and the {} in the {} cell",
                            name(a),
                            cell(a),
                            name(b),
                            cell(b)
                        );
                        assert!(evidence.starts_with(&cells), "{evidence}");
                        // Different cells show the relation; a shared column or row
                        // says which way the first object lies.
                        let [ca, cb] = [cell(a), cell(b)].map(|c| {
                            let row = GRID_NAMES.iter().position(|r| r.contains(&c));
                            let col = GRID_NAMES
                                .iter()
                                .find_map(|r| r.iter().position(|x| *x == c));
                            (row.unwrap(), col.unwrap())
                        });
                        let (first_a, shared, how) = match holds {
                            Relation::LeftOf => (true, ca.1 == cb.1, "further left"),
                            Relation::RightOf => (false, ca.1 == cb.1, "further right"),
                            Relation::Above => (true, ca.0 == cb.0, "higher"),
                            _ => (false, ca.0 == cb.0, "lower"),
                        };
                        if shared {
                            assert_eq!(
                                &evidence[cells.len()..],
                                format!(", the {} a little {how}", name(a))
                            );
                        } else {
                            assert_eq!(evidence, cells);
                            let (x, y) = match holds {
                                Relation::LeftOf | Relation::RightOf => (ca.1, cb.1),
                                _ => (ca.0, cb.0),
                            };
                            assert_eq!(x < y, first_a, "{evidence} for {}", q.text);
                        }
                    }
                }
                Query::Exists { color, kind } => {
                    if yes {
                        let named = evidence
                            .strip_prefix("The ")
                            .and_then(|e| e.split(" in the ").next())
                            .unwrap();
                        let o = g.scene.objects.iter().find(|o| o.name() == named).unwrap();
                        assert!(matches(o, color, kind), "{evidence} for {}", q.text);
                        assert!(evidence.ends_with(&format!("{} cell is one", cell(o.id))));
                    } else {
                        assert_eq!(evidence, "I find none in the picture");
                    }
                }
                Query::Occluded { a } => {
                    assert!(evidence.starts_with(&format!(
                        "The {} in the {} cell is ",
                        name(a),
                        cell(a)
                    )));
                    assert_eq!(evidence.ends_with("fully visible"), !yes, "{evidence}");
                }
                _ => panic!("a yes/no question of another kind: {}", q.text),
            }
            *by_category.entry(q.category.name()).or_default() += 1;
        });
        for category in ["existence", "occlusion", "spatial_relation", "depth_order"] {
            assert!(
                by_category.get(category).is_some_and(|&n| n > 0),
                "{by_category:?}"
            );
        }
    }

    #[test]
    fn descriptions_name_every_visible_object_left_to_right() {
        let mut described = 0;
        for (g, value) in single_turn_chains(description_chain, "describe") {
            let visible = visible_left_to_right(&g.scene, &g.frame);
            assert!(
                value.contains(&format!("\\boxed{{{}}}", visible.len())),
                "{value}"
            );
            let mut from = 0;
            for (o, s) in &visible {
                let entry = format!(
                    "the {}, in the {} cell, about {:.1} m from the camera",
                    o.name(),
                    grid_cell(&g.frame, s.centroid),
                    camera_distance(&g.scene, o)
                );
                let at = value[from..]
                    .find(&entry)
                    .unwrap_or_else(|| panic!("{entry} in {value}"));
                from += at + entry.len();
                described += 1;
            }
        }
        assert!(described > 20);
    }

    #[test]
    fn cell_listings_put_every_visible_object_in_its_cell() {
        let (mut listed, mut empty_cells) = (0, 0);
        for (g, value) in single_turn_chains(cells_chain, "cells") {
            let think = value
                .strip_prefix("<think> ")
                .and_then(|v| v.split(". </think>").next())
                .unwrap();
            let cells: Vec<(&str, &str)> = think
                .split("; ")
                .map(|part| part.split_once(": ").unwrap())
                .collect();
            let names: Vec<&str> = GRID_NAMES.iter().flatten().copied().collect();
            assert_eq!(cells.iter().map(|c| c.0).collect::<Vec<_>>(), names);
            let visible = visible_left_to_right(&g.scene, &g.frame);
            for (cell, what) in cells {
                let here: Vec<String> = visible
                    .iter()
                    .filter(|(_, s)| grid_cell(&g.frame, s.centroid) == cell)
                    .map(|(o, _)| o.name())
                    .collect();
                if here.is_empty() {
                    assert_eq!(what, "nothing");
                    empty_cells += 1;
                } else {
                    assert_eq!(what, here.join(" and "));
                    listed += here.len();
                }
            }
            assert!(value.ends_with(&format!(
                "<answer> The image shows \\boxed{{{}}} objects. </answer>",
                visible.len()
            )));
        }
        assert!(listed > 20 && empty_cells > 20, "{listed} {empty_cells}");
    }
}
