// What a model's answer is and the words the page shows for it: the port of
// flaxdigits/core/contract.py answer(), drawing_scores() and drawing_answers() (the gate's drawing
// rule) and of the Gradio page's card and status line (serve/page/views.py answer_words, summary).
// tests/test_web_answer.py runs it in Node against them on many confidences, probabilities and
// rules, the thresholds' edges included.

export const NOT_A_DIGIT_WORDS = "that doesn't look like a digit";

// "digit", "not sure" or "not a digit" (contract.ANSWERS) for a model's confidence, the largest of
// its calibrated probabilities, under its answer rule (site.json; null for a model file from
// before the rule, whose every answer is a digit).
export function answer(confidence, rule) {
  if (!rule || Object.keys(rule).length === 0) return "digit"; // Python: `if not rule`
  if (confidence < rule.not_a_digit_below) return "not a digit";
  if (confidence < rule.not_sure_below) return "not sure";
  return "digit";
}

// The drawing rule's score of one drawing (contract.drawing_scores) from the members'
// calibrated probabilities (one array per model, in the order the Python side stacks them: mlp,
// cnn) and the gate's: the smaller of the gate's largest probability and the largest, over the
// ten classes, of the mean over all the models, the gate last. The sum runs in that order and is
// then divided, as numpy's mean over the first axis does: the same double, bit for bit.
export function drawingScore(memberProbabilities, gateProbabilities) {
  const every = [...memberProbabilities, gateProbabilities];
  let best = -Infinity;
  for (let k = 0; k < gateProbabilities.length; k++) {
    let sum = 0;
    for (const p of every) sum += p[k];
    best = Math.max(best, sum / every.length);
  }
  return Math.min(Math.max(...gateProbabilities), best);
}

// Each model's answer under the drawing rule (contract.drawing_answers): all "not a digit" when the
// drawing's score is under the rule's not_a_digit_below, else each keeps its own answer with
// "not a digit" made "not sure". No rule (no gate): the answers as they are.
export function drawingAnswers(answers, score, rule) {
  if (!rule || Object.keys(rule).length === 0) return [...answers]; // Python: `if not rule`
  if (score < rule.not_a_digit_below) return answers.map(() => "not a digit");
  return answers.map((a) => (a === "not a digit" ? "not sure" : a));
}

// What a card says besides the digit: "" for a digit (or no answer).
export function answerWords(ans, digit) {
  if (ans === "not sure") return `not sure — maybe ${digit}`;
  if (ans === "not a digit") return NOT_A_DIGIT_WORDS;
  return "";
}

// The status line for models [{name, digit, answer}], as [text, bold] parts.
export function summary(models) {
  const answers = new Set(models.map((m) => m.answer));
  const only = (a) => answers.size === 1 && answers.has(a);
  if (only("not a digit")) {
    return [[`${models.length === 2 ? "Neither model" : "No model"} thinks that is a digit.`, false]];
  }
  if (only("digit")) {
    const digits = new Set(models.map((m) => m.digit));
    if (digits.size === 1) {
      const who = models.length === 2 ? "Both models" : "All models";
      return [[`${who} read `, false], [String(models[0].digit), true], [".", false]];
    }
    return [["The models disagree: ", false], ...joined(models, ", ", reads), [".", false]];
  }
  return [...joined(models, "; ", says), [".", false]];
}

function reads(m) {
  return [[`${m.name.toUpperCase()} reads `, false], [String(m.digit), true]];
}

function says(m) {
  if (m.answer === "not a digit") return [[`${m.name.toUpperCase()} does not think that is a digit`, false]];
  if (m.answer === "not sure") return [[`${m.name.toUpperCase()} is not sure — maybe `, false], [String(m.digit), true]];
  return reads(m);
}

function joined(models, separator, part) {
  return models.flatMap((m, i) => (i === 0 ? part(m) : [[separator, false], ...part(m)]));
}
