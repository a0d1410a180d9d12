/** `jetshard nas run|show` (placeholder until the NAS CLI lands). */
import { UsageError } from "./args.js";

export const NAS_HELP = `Usage:
  jetshard nas run <spec.json>     start an experiment and follow its progress
  jetshard nas show <id>           show an experiment`;

export async function cmdNas(_argv: string[]): Promise<void> {
  throw new UsageError("nas commands are not available yet");
}
