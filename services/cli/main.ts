/**
 * The `jetshard` command: parses the command line (program.ts), runs the command, and exits with one of the codes
 * of errors.ts (0 ok, 1 failure, 2 usage, 3 unavailable, 4 permission denied).
 */
import { CommanderError } from "commander";
import { EXIT, exitCodeFor, isExpected } from "./errors.js";
import { buildProgram } from "./program.js";

/**
 * Runs `jetshard <argv>`. Resolves to the exit code for a command that finished (long-running ones such as
 * `worker` or `up` resolve once started and keep the process alive); never rejects.
 */
export async function main(argv: string[]): Promise<number> {
  const program = buildProgram();
  if (argv.length === 0) {
    program.outputHelp();
    return EXIT.ok;
  }
  try {
    await program.parseAsync(argv, { from: "user" });
    return typeof process.exitCode === "number" ? process.exitCode : EXIT.ok;
  } catch (err) {
    if (err instanceof CommanderError) {
      // commander has printed the help or the message naming the flag or argument
      return err.exitCode === 0 ? EXIT.ok : EXIT.usage;
    }
    process.stderr.write(`jetshard: ${isExpected(err) ? (err as Error).message : ((err as Error)?.stack ?? String(err))}\n`);
    return exitCodeFor(err);
  }
}

const code = await main(process.argv.slice(2));
// a failed command exits at once (open handles must not keep it alive); a successful one exits when its work is done
if (code !== EXIT.ok) process.exit(code);
