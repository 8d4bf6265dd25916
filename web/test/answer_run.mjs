// Runs web/answer.js in Node for tests/test_web_answer.py: the answer rule and the words the page
// shows, on cases the test writes.
//
//   node web/test/answer_run.mjs JOB.json OUT.json
// JOB: {"answers": [[confidence, rule | null]], "words": [[answer, digit]],
//       "summaries": [[{"name", "digit", "answer"}]]}
// OUT: {"answers": [answer], "words": [text], "summaries": [Markdown: bold parts in **]}
import { readFileSync, writeFileSync } from "node:fs";

import { answer, answerWords, summary } from "../answer.js";

const [jobPath, outPath] = process.argv.slice(2);
const job = JSON.parse(readFileSync(jobPath, "utf8"));
const markdown = (parts) => parts.map(([text, bold]) => (bold ? `**${text}**` : text)).join("");
writeFileSync(
  outPath,
  JSON.stringify({
    answers: job.answers.map(([confidence, rule]) => answer(confidence, rule)),
    words: job.words.map(([ans, digit]) => answerWords(ans, digit)),
    summaries: job.summaries.map((models) => markdown(summary(models))),
  }),
);
