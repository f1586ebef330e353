/**
 * Routing-rule conditions (SPEC §7.3): the SpEL subset ModelArts accepts, with Java semantics so
 * rules port unchanged — `String.hashCode()` over UTF-16 units in 32-bit signed arithmetic, `%`
 * keeping the dividend's sign, `matches` as a whole-string match. A condition is parsed once,
 * when the service is created or updated, into a closure the data plane calls per request.
 */

import v8 from 'node:v8';

// A regular expression that backtracks past V8's threshold (50,000 steps) goes on in V8's
// linear-time engine, where that engine can run it: ordinary matching keeps its speed (~13 ns
// for a rule's pattern; the linear engine alone takes ~280 ns), and a header a caller sends
// cannot make a pattern such as '(a|a)*b' backtrack for seconds.
v8.setFlagsFromString('--enable-experimental-regexp-engine-on-excessive-backtracks');

/** What a pattern needs the 'u' flag for: Unicode property classes, code point escapes, characters past the BMP. */
const UNICODE_ONLY = /\\[pP]\{|\\u\{|[\u{10000}-\u{10FFFF}]/u;

/**
 * A whole-string matcher for a rule's `matches` pattern, checked in Unicode mode as rules always
 * were. Patterns that need that mode (the linear engine does not run it) keep it; the others run
 * without it, so the fallback above covers them. Backreferences, lookarounds and counts past 16
 * are beyond the linear engine, so those patterns backtrack as any JavaScript regular expression.
 */
function matcher(pattern: string): RegExp {
  const source = `^(?:${pattern})$`;
  const checked = new RegExp(source, 'u');
  return UNICODE_ONLY.test(pattern) ? checked : new RegExp(source);
}

export const BUILTIN_VARIABLES = ['DOMAIN_NAME', 'DOMAIN_ID', 'PROJECT_NAME', 'PROJECT_ID', 'USER_NAME', 'USER_ID'] as const;
export type BuiltinVariable = (typeof BUILTIN_VARIABLES)[number];

/** What a condition may read about a request. */
export interface RuleInput {
  variable(name: BuiltinVariable): string | null;
  /** A request header by lower-case name, or null when absent. */
  header(name: string): string | null;
}

export type Condition = (input: RuleInput) => boolean;

export class RuleSyntaxError extends Error {
  constructor(message: string, readonly position: number) {
    super(`${message} at position ${position}`);
  }
}

type Value = string | number | boolean | null;
type Expr = (input: RuleInput) => Value;

interface Token { kind: 'var' | 'str' | 'int' | 'op' | 'word' | 'end'; text: string; pos: number; value?: string | number }

const OPS = ['==', '!=', '<=', '>=', '&&', '||', '<', '>', '!', '%', '(', ')', '.'];

function tokenize(src: string): Token[] {
  const out: Token[] = [];
  let i = 0;
  while (i < src.length) {
    const c = src[i]!;
    if (/\s/.test(c)) { i++; continue; }
    const pos = i + 1;
    if (c === '#') {
      const m = /^#([A-Za-z_][A-Za-z0-9_-]*)/.exec(src.slice(i));
      if (!m) throw new RuleSyntaxError(`'#' must start a variable such as #HEADER_uid or #USER_NAME`, pos);
      out.push({ kind: 'var', text: m[0], pos, value: m[1]! });
      i += m[0].length;
    } else if (c === "'") {
      let j = i + 1;
      let s = '';
      for (;;) {
        if (j >= src.length) throw new RuleSyntaxError('unterminated string', pos);
        if (src[j] === "'") {
          if (src[j + 1] === "'") { s += "'"; j += 2; continue; }
          break;
        }
        s += src[j++];
      }
      out.push({ kind: 'str', text: src.slice(i, j + 1), pos, value: s });
      i = j + 1;
    } else if (/[0-9]/.test(c) || (c === '-' && /[0-9]/.test(src[i + 1] ?? '') && !/^(var|str|int)$/.test(out.at(-1)?.kind ?? '') && out.at(-1)?.text !== ')')) {
      const m = /^-?[0-9]+/.exec(src.slice(i))!;
      const n = Number(m[0]);
      if (!Number.isSafeInteger(n) || n > 2147483647 || n < -2147483648) throw new RuleSyntaxError(`integer ${m[0]} is out of the 32-bit range`, pos);
      out.push({ kind: 'int', text: m[0], pos, value: n });
      i += m[0].length;
    } else if (/[A-Za-z]/.test(c)) {
      const m = /^[A-Za-z]+/.exec(src.slice(i))!;
      out.push({ kind: 'word', text: m[0], pos });
      i += m[0].length;
    } else {
      const op = OPS.find((o) => src.startsWith(o, i));
      if (!op) throw new RuleSyntaxError(`unexpected character '${c}'`, pos);
      out.push({ kind: 'op', text: op, pos });
      i += op.length;
    }
  }
  out.push({ kind: 'end', text: 'end of condition', pos: src.length + 1 });
  return out;
}

/** Java's String.hashCode: s[0]*31^(n-1) + … over UTF-16 code units, in 32-bit signed arithmetic. */
export function javaHashCode(s: string): number {
  let h = 0;
  for (let i = 0; i < s.length; i++) h = (Math.imul(31, h) + s.charCodeAt(i)) | 0;
  return h;
}

/** Java's % on ints: truncated division, the result takes the dividend's sign (as JS % does). */
const javaMod = (a: number, b: number): number => a % b | 0;

/**
 * Bounds on a condition. Parsing and evaluation recurse as deep as '(' and '!' nest, and a
 * condition compiles to closures as long as its '%' and '.hashCode()' chains: without bounds, a
 * stored condition of 11,000 '!' overflowed the stack at the first request and took the process
 * down (and again after each restart). ModelArts' own conditions are a line or two.
 */
export const MAX_CONDITION_LENGTH = 2048;
export const MAX_NESTING = 32;

class Parser {
  private i = 0;
  private depth = 0;
  constructor(private readonly tokens: Token[]) {}

  private peek(): Token { return this.tokens[this.i]!; }
  private next(): Token { return this.tokens[this.i++]!; }
  private fail(t: Token, expected: string): never {
    throw new RuleSyntaxError(`unexpected ${t.kind === 'end' ? 'end of condition' : `'${t.text}'`}; expected ${expected}`, t.pos);
  }
  private accept(text: string): boolean {
    if (this.peek().kind === 'op' || this.peek().kind === 'word') {
      if (this.peek().text === text) { this.i++; return true; }
    }
    return false;
  }

  parse(): Expr {
    const e = this.or();
    if (this.peek().kind !== 'end') this.fail(this.peek(), "'&&', '||' or the end of the condition");
    return e;
  }

  // A chain of '||' or '&&' is one loop over its operands, not closures nested as long as the chain.
  private or(): Expr {
    const parts = [this.and()];
    while (this.accept('||')) parts.push(this.and());
    if (parts.length === 1) return parts[0]!;
    return (x) => {
      for (const p of parts) if (truthy(p(x))) return true;
      return false;
    };
  }

  private and(): Expr {
    const parts = [this.not()];
    while (this.accept('&&')) parts.push(this.not());
    if (parts.length === 1) return parts[0]!;
    return (x) => {
      for (const p of parts) if (!truthy(p(x))) return false;
      return true;
    };
  }

  private nest(t: Token): void {
    if (++this.depth > MAX_NESTING) throw new RuleSyntaxError(`'${t.text}' nests more than ${MAX_NESTING} deep; write the condition flatter`, t.pos);
  }

  private not(): Expr {
    const t = this.peek();
    if (this.accept('!')) {
      this.nest(t);
      const e = this.not();
      this.depth--;
      return (x) => !truthy(e(x));
    }
    return this.comparison();
  }

  private comparison(): Expr {
    const left = this.mod();
    const t = this.peek();
    const op = t.text;
    if (t.kind === 'word' && op === 'matches') {
      this.next();
      const pat = this.next();
      if (pat.kind !== 'str') this.fail(pat, "a quoted regular expression after 'matches'");
      let re: RegExp;
      try {
        re = matcher(pat.value as string);
      } catch (err) {
        throw new RuleSyntaxError(`invalid regular expression: ${(err as Error).message}`, pat.pos);
      }
      return (x) => {
        const v = left(x);
        return typeof v === 'string' && re.test(v);
      };
    }
    if (t.kind === 'op' && ['==', '!=', '<', '<=', '>', '>='].includes(op)) {
      this.next();
      const right = this.mod();
      switch (op) {
        case '==': return (x) => equal(left(x), right(x));
        case '!=': return (x) => !equal(left(x), right(x));
        default: return (x) => compare(op, left(x), right(x));
      }
    }
    return left;
  }

  private mod(): Expr {
    let left = this.postfix();
    while (this.accept('%')) {
      const l = left, r = this.postfix();
      left = (x) => {
        const a = l(x), b = r(x);
        if (typeof a !== 'number' || typeof b !== 'number' || b === 0) return null;
        return javaMod(a, b);
      };
    }
    return left;
  }

  private postfix(): Expr {
    let e = this.primary();
    while (this.accept('.')) {
      const m = this.next();
      if (m.kind !== 'word' || m.text !== 'hashCode') this.fail(m, "'hashCode' (the one method conditions may call)");
      if (!this.accept('(')) this.fail(this.peek(), "'(' after hashCode");
      if (!this.accept(')')) this.fail(this.peek(), "')'");
      const inner = e;
      e = (x) => {
        const v = inner(x);
        return typeof v === 'string' ? javaHashCode(v) : null;
      };
    }
    return e;
  }

  private primary(): Expr {
    const t = this.next();
    switch (t.kind) {
      case 'str': { const v = t.value as string; return () => v; }
      case 'int': { const v = t.value as number; return () => v; }
      case 'var': return variable(t);
      case 'op':
        if (t.text === '(') {
          this.nest(t);
          const e = this.or();
          if (!this.accept(')')) this.fail(this.peek(), "')'");
          this.depth--;
          return e;
        }
        return this.fail(t, 'a variable, a quoted string, an integer or (');
      case 'word':
        if (t.text === 'true' || t.text === 'false') { const v = t.text === 'true'; return () => v; }
        return this.fail(t, 'a variable (#NAME), a quoted string, an integer or (');
      default:
        return this.fail(t, 'a variable, a quoted string, an integer or (');
    }
  }
}

function variable(t: Token): Expr {
  const name = t.value as string;
  if (name.startsWith('HEADER_') && name.length > 7) {
    const header = name.slice(7).toLowerCase();
    return (x) => x.header(header);
  }
  if ((BUILTIN_VARIABLES as readonly string[]).includes(name)) return (x) => x.variable(name as BuiltinVariable);
  throw new RuleSyntaxError(`unknown variable #${name}; expected #HEADER_<name> or one of ${BUILTIN_VARIABLES.map((v) => '#' + v).join(', ')}`, t.pos);
}

const truthy = (v: Value): boolean => v === true;

function equal(a: Value, b: Value): boolean {
  if (a === null || b === null) return false;
  return a === b;
}

function compare(op: string, a: Value, b: Value): boolean {
  if (typeof a !== 'number' || typeof b !== 'number') return false;
  switch (op) {
    case '<': return a < b;
    case '<=': return a <= b;
    case '>': return a > b;
    default: return a >= b;
  }
}

/** Parses a condition; throws RuleSyntaxError naming the position (1-based) of the problem. */
export function parseCondition(src: string): Condition {
  if (src.trim() === '') throw new RuleSyntaxError('the condition is empty', 1);
  if (src.length > MAX_CONDITION_LENGTH) throw new RuleSyntaxError(`the condition is ${src.length} characters long; at most ${MAX_CONDITION_LENGTH} are allowed`, MAX_CONDITION_LENGTH + 1);
  const e = new Parser(tokenize(src)).parse();
  return (input) => e(input) === true;
}

/** The headers a condition reads, so the data plane copies only those from the request. */
export function headersOf(src: string): string[] {
  return [...src.matchAll(/#HEADER_([A-Za-z0-9_-]+)/g)].map((m) => m[1]!.toLowerCase());
}
