/**
 * Search strategies: what to try next, given what has been tried.
 *
 * All strategies share one interface and are deterministic functions of (seed, search space, history):
 * - proposal k draws its random numbers from its own generator seeded by hash(seed, k), so nothing
 *   depends on how many random numbers earlier proposals consumed;
 * - evolution's population is the `population` most recently *proposed* trials that have succeeded
 *   ("age" is proposal order, not report order), so the state after a set of reports does not depend on
 *   the order in which they arrived.
 * Hence a controller restarted with `history` (every trial proposed so far, in proposal order, with its
 * score once known) continues exactly as the old one would have, and `next()` may be called several
 * times before any result is reported (one call per free concurrency slot).
 */
import { rng } from "#shared/onnx/builder.js";
import { NasSpecError } from "./errors.js";
import { DEFAULT_GRID_STEPS, gridPointAt, gridSize, mutate, pointKey, sample, spaceSize, type Point, type SearchSpace } from "./search-space.js";

/** Built-in strategies. */
export const STRATEGY_NAMES = ["random", "grid", "evolution"] as const;
export type StrategyName = (typeof STRATEGY_NAMES)[number];
/** Which way an objective is better. */
export type Direction = "maximize" | "minimize";

/** Default evolution population size. */
export const DEFAULT_POPULATION = 20;
/** Default evolution tournament size. */
export const DEFAULT_SAMPLE = 5;

/** A strategy by name, or as an object with its options (defaults filled in by `normalizeStrategy`). */
export type StrategySpec =
  | StrategyName
  | { name: "random" }
  | { name: "grid"; steps?: number }
  | { name: "evolution"; population?: number; sample?: number };

/** One trial as the controller records it, for `history`. */
export interface TrialRecord {
  trialId: string;
  point: Point;
  /**
   * The objective as measured (not yet oriented by direction) once the trial succeeded; `null` if it failed;
   * absent (`undefined`) while it is still running (its report is then still expected).
   */
  score?: number | null;
}

/** A search strategy: proposes points, learns from reported scores. Not thread-safe; one per experiment. */
export interface Strategy {
  readonly name: StrategyName;
  /** Number of points proposed so far (restored history included). */
  readonly proposed: number;
  /**
   * The next point to evaluate, or null when the strategy has nothing new to offer (grid done, or every
   * point of a finite space proposed). May be called again before earlier proposals are reported.
   */
  next(): Point | null;
  /**
   * Reports a proposed trial's result: its objective as measured (the strategy orients it by `direction`),
   * or null (or a non-finite number) for a failed trial. A second report for the same `trialId` is ignored,
   * so redelivered results are harmless. A point the strategy never proposed is accepted and counts as
   * born at the latest proposal.
   */
  report(trialId: string, point: Point, score: number | null): void;
}

/** Options of `createStrategy`. */
export interface StrategyOptions {
  /** Seed of every random choice (default 0). */
  seed?: number;
  /** Direction of the objective (default "maximize"). */
  direction?: Direction;
  /** Every trial proposed before, in proposal order, to resume from. */
  history?: readonly TrialRecord[];
}

/** Candidate draws before falling back to enumerating the unseen points of a finite space. */
const MAX_DRAWS = 64;
/** Finite spaces up to this size are enumerated when draws keep hitting seen points. */
const MAX_ENUMERATION = 1_000_000;

/** Seed for proposal k: a 32-bit hash of (seed, k) (murmur3 finalizer). */
function proposalSeed(seed: number, k: number): number {
  let h = ((seed >>> 0) ^ Math.imul(k + 1, 0x9e3779b1)) >>> 0;
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}

interface Member {
  birth: number;
  point: Point;
  /** Oriented: higher is better. */
  score: number;
}

/** Bookkeeping shared by all strategies: proposals, seen points, pending trials, duplicate reports. */
abstract class BaseStrategy implements Strategy {
  abstract readonly name: StrategyName;
  proposed = 0;
  protected readonly seen = new Set<string>();
  private readonly pendingByKey = new Map<string, number[]>();
  private readonly pendingById = new Map<string, { birth: number; key: string }>();
  private readonly reported = new Set<string>();
  private readonly sign: number;

  constructor(
    protected readonly space: SearchSpace,
    protected readonly seed: number,
    direction: Direction,
  ) {
    this.sign = direction === "minimize" ? -1 : 1;
  }

  /** Replays history; must run after the subclass is fully constructed. */
  restore(history: readonly TrialRecord[]): void {
    history.forEach((rec, birth) => {
      const key = pointKey(this.space, rec.point);
      this.seen.add(key);
      this.proposed = birth + 1;
      if (rec.score === undefined) {
        this.pendingById.set(rec.trialId, { birth, key });
        this.pendingList(key).push(birth);
      } else {
        this.reported.add(rec.trialId);
        this.settled(birth, rec.point, this.orient(rec.score));
      }
    });
  }

  abstract next(): Point | null;

  report(trialId: string, point: Point, score: number | null): void {
    if (this.reported.has(trialId)) return;
    this.reported.add(trialId);
    const key = pointKey(this.space, point);
    let birth: number | undefined;
    const byId = this.pendingById.get(trialId);
    const list = this.pendingByKey.get(key);
    if (byId) {
      this.pendingById.delete(trialId);
      birth = byId.birth;
      const i = list?.indexOf(birth) ?? -1;
      if (i >= 0) list!.splice(i, 1);
    } else {
      birth = list?.shift();
    }
    if (list && list.length === 0) this.pendingByKey.delete(key);
    this.seen.add(key);
    this.settled(birth ?? this.proposed - 1, point, this.orient(score));
  }

  /** Records a proposal; every `next()` that returns a point goes through here. */
  protected propose(point: Point): Point {
    const key = pointKey(this.space, point);
    this.seen.add(key);
    this.pendingList(key).push(this.proposed);
    this.proposed++;
    return point;
  }

  /** A finished trial; `score` is oriented (higher is better) or null for a failure. */
  protected settled(_birth: number, _point: Point, _score: number | null): void {}

  protected rand(): () => number {
    return rng(proposalSeed(this.seed, this.proposed));
  }

  /**
   * A random point not proposed before; null if a finite space is exhausted. In a finite space too large
   * to enumerate, a repeat is returned after MAX_DRAWS unlucky draws rather than spinning.
   */
  protected randomUnseen(rand: () => number): Point | null {
    let p: Point | null = null;
    for (let i = 0; i < MAX_DRAWS; i++) {
      p = sample(this.space, rand);
      if (!this.seen.has(pointKey(this.space, p))) return p;
    }
    const size = spaceSize(this.space);
    if (!Number.isFinite(size)) return p;
    if (size > MAX_ENUMERATION) return p;
    const unseen: number[] = [];
    for (let i = 0; i < size; i++) if (!this.seen.has(pointKey(this.space, gridPointAt(this.space, i)))) unseen.push(i);
    if (unseen.length === 0) return null;
    return gridPointAt(this.space, unseen[Math.floor(rand() * unseen.length)]!);
  }

  private orient(score: number | null): number | null {
    return score === null || !Number.isFinite(score) ? null : this.sign * score;
  }

  private pendingList(key: string): number[] {
    let list = this.pendingByKey.get(key);
    if (!list) this.pendingByKey.set(key, (list = []));
    return list;
  }
}

/** Independent uniform samples; never repeats a point of a finite space, null once it is exhausted. */
class RandomStrategy extends BaseStrategy {
  readonly name = "random" as const;

  next(): Point | null {
    const p = this.randomUnseen(this.rand());
    return p && this.propose(p);
  }
}

/**
 * Every grid point once, in `gridPointAt` order (continuous parameters cut into `steps` values); the seed
 * and scores are not used. Points already in the history are skipped wherever they are in the grid.
 */
class GridStrategy extends BaseStrategy {
  readonly name = "grid" as const;
  private cursor = 0;
  private readonly size: number;

  constructor(
    space: SearchSpace,
    seed: number,
    direction: Direction,
    private readonly steps: number,
  ) {
    super(space, seed, direction);
    this.size = gridSize(space, steps);
  }

  next(): Point | null {
    while (this.cursor < this.size) {
      const p = gridPointAt(this.space, this.cursor++, this.steps);
      if (!this.seen.has(pointKey(this.space, p))) return this.propose(p);
    }
    return null;
  }
}

/**
 * Regularized (aging) evolution, Real et al. 2019 ("Regularized Evolution for Image Classifier
 * Architecture Search"), asynchronous form:
 * - the first `population` proposals are random;
 * - after that, `sample` members are drawn without replacement from the population (the `population`
 *   youngest successful trials, by proposal order), the best one is mutated in one parameter, and the
 *   child is proposed. When the child's result arrives it joins the population and the oldest member
 *   leaves (a result older than every member of a full population is dropped at once).
 * A child that was proposed before is mutated again (a short random walk), up to MAX_DRAWS times, then a
 * random unseen point is used, so points are not repeated while the space has new ones.
 */
class EvolutionStrategy extends BaseStrategy {
  readonly name = "evolution" as const;
  /** Sorted by birth, oldest first; at most `population` long. */
  private readonly members: Member[] = [];

  constructor(
    space: SearchSpace,
    seed: number,
    direction: Direction,
    private readonly population: number,
    private readonly tournament: number,
  ) {
    super(space, seed, direction);
  }

  next(): Point | null {
    const rand = this.rand();
    if (this.proposed < this.population || this.members.length === 0) {
      const p = this.randomUnseen(rand);
      return p && this.propose(p);
    }
    const pool = this.members.slice();
    const k = Math.min(this.tournament, pool.length);
    let parent: Member | undefined;
    for (let i = 0; i < k; i++) {
      const j = i + Math.floor(rand() * (pool.length - i));
      [pool[i], pool[j]] = [pool[j]!, pool[i]!];
      const m = pool[i]!;
      // Ties go to the younger member, in the spirit of aging.
      if (!parent || m.score > parent.score || (m.score === parent.score && m.birth > parent.birth)) parent = m;
    }
    let child = parent!.point;
    for (let i = 0; i < MAX_DRAWS; i++) {
      child = mutate(this.space, child, rand);
      if (!this.seen.has(pointKey(this.space, child))) return this.propose(child);
    }
    const p = this.randomUnseen(rand);
    return p && this.propose(p);
  }

  protected override settled(birth: number, point: Point, score: number | null): void {
    if (score === null) return;
    const full = this.members.length >= this.population;
    if (full && birth < this.members[0]!.birth) return;
    let i = this.members.length;
    while (i > 0 && this.members[i - 1]!.birth > birth) i--;
    this.members.splice(i, 0, { birth, point, score });
    if (this.members.length > this.population) this.members.shift();
  }
}

/** A strategy spec in object form with every option set. */
export type NormalizedStrategy = { name: "random" } | { name: "grid"; steps: number } | { name: "evolution"; population: number; sample: number };

/** Normalizes a strategy spec to its object form with defaults filled in (does not range-check options). */
export function normalizeStrategy(spec: StrategySpec): NormalizedStrategy {
  const s = typeof spec === "string" ? { name: spec } : spec;
  switch (s.name) {
    case "random":
      return { name: "random" };
    case "grid":
      return { name: "grid", steps: ("steps" in s ? s.steps : undefined) ?? DEFAULT_GRID_STEPS };
    case "evolution":
      return {
        name: "evolution",
        population: ("population" in s ? s.population : undefined) ?? DEFAULT_POPULATION,
        sample: ("sample" in s ? s.sample : undefined) ?? DEFAULT_SAMPLE,
      };
    default:
      throw new NasSpecError("strategy", `unknown strategy "${(s as { name: string }).name}"`);
  }
}

/**
 * Builds a strategy over `space`.
 * - `"random"`: uniform samples without repeats in finite spaces.
 * - `"grid"` / `{name: "grid", steps}`: the full grid, continuous parameters cut into `steps` (default 5).
 * - `"evolution"` / `{name: "evolution", population, sample}`: regularized evolution (defaults 20 and 5).
 * With `opts.history` the strategy resumes where the one that proposed those trials stood.
 * @throws NasSpecError for an unknown strategy or bad evolution options.
 */
export function createStrategy(spec: StrategySpec, space: SearchSpace, opts: StrategyOptions = {}): Strategy {
  const s = normalizeStrategy(spec);
  const seed = opts.seed ?? 0;
  const direction = opts.direction ?? "maximize";
  let strategy: BaseStrategy;
  if (s.name === "random") strategy = new RandomStrategy(space, seed, direction);
  else if (s.name === "grid") {
    if (!Number.isInteger(s.steps) || s.steps < 1) throw new NasSpecError("strategy.steps", "must be an integer >= 1");
    strategy = new GridStrategy(space, seed, direction, s.steps);
  } else {
    if (!Number.isInteger(s.population) || s.population < 2) throw new NasSpecError("strategy.population", "must be an integer >= 2");
    if (!Number.isInteger(s.sample) || s.sample < 1) throw new NasSpecError("strategy.sample", "must be an integer >= 1");
    if (s.sample > s.population) throw new NasSpecError("strategy.sample", `must be <= population (${s.population})`);
    strategy = new EvolutionStrategy(space, seed, direction, s.population, s.sample);
  }
  if (opts.history) strategy.restore(opts.history);
  return strategy;
}
