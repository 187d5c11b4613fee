// `npm test`: the tests run against a live service. tests/clients/test_node_client.py starts one
// (with fake hosted providers) and runs `npm test` with its addresses in LEARNX_TEST_*; without
// them, this runs that pytest test, which calls back here. Arguments go to `node --test`
// (e.g. `npm test -- --test-name-pattern=429`).

import { spawnSync } from "node:child_process";
import { readdirSync } from "node:fs";
import { fileURLToPath } from "node:url";

const here = fileURLToPath(new URL(".", import.meta.url));
const repository = fileURLToPath(new URL("../../../../", import.meta.url));
const args = process.argv.slice(2);

function run(command: string, commandArgs: string[], cwd?: string): number {
  const result = spawnSync(command, commandArgs, { stdio: "inherit", cwd });
  return result.status ?? 1;
}

if (process.env["LEARNX_TEST_URL"]) {
  const files = readdirSync(here).filter((f) => f.endsWith(".test.js")).sort().map((f) => here + f);
  // One file at a time: the tests script the shared fake providers.
  process.exit(run(process.execPath, ["--test", "--test-concurrency=1", "--test-reporter=spec", ...args, ...files]));
} else {
  console.log("LEARNX_TEST_URL is not set: starting the service through pytest (scripts/test.sh)");
  process.env["NODE_TEST_ARGS"] = args.map((a) => `'${a.replaceAll("'", "'\\''")}'`).join(" ");
  const pytest = ["scripts/test.sh", "tests/clients/test_node_client.py", "-rP", "--show-capture=stdout"];
  process.exit(run("bash", pytest, repository));
}
