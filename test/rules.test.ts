import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { javaHashCode, MAX_CONDITION_LENGTH, MAX_NESTING, parseCondition, RuleSyntaxError, type RuleInput } from '../src/traffic/rules.js';

/** Test vectors for the routing-rule language: Java semantics, ModelArts' examples, errors with positions. */

function input(vars: Record<string, string>, headers: Record<string, string> = {}): RuleInput {
  return { variable: (n) => vars[n] ?? null, header: (h) => headers[h] ?? null };
}
const holds = (cond: string, i: RuleInput): boolean => parseCondition(cond)(i);

describe('Java String.hashCode', () => {
  const vectors: [string, number][] = [
    ['', 0], ['a', 97], ['abc', 96354], ['hello', 99162322], ['Hello World', -862545276],
    ['polygenelubricants', -2147483648], // Integer.MIN_VALUE, as Java gives it
    ['GydZG_', -2147483648], ['user-42', -147182656], ['\u00e9t\u00e9', 227742], ['😀', 1772899], // a surrogate pair: two UTF-16 units
  ];
  for (const [s, h] of vectors) test(`"${s}".hashCode() == ${h}`, () => assert.equal(javaHashCode(s), h));
});

describe('conditions', () => {
  test("ModelArts' examples", () => {
    assert.equal(holds("#DOMAIN_NAME == 'User A'", input({ DOMAIN_NAME: 'User A' })), true);
    assert.equal(holds("#DOMAIN_NAME == 'User A'", input({ DOMAIN_NAME: 'User B' })), false);
    assert.equal(holds("#DOMAIN_NAME matches 'op.*'", input({ DOMAIN_NAME: 'operations' })), true);
    assert.equal(holds("#DOMAIN_NAME matches 'op.*'", input({ DOMAIN_NAME: 'ops-team-x' })), true);
    assert.equal(holds("#DOMAIN_NAME matches 'op.*'", input({ DOMAIN_NAME: 'top' })), false, 'whole-string match');
    assert.equal(holds("#HEADER_version == '0.0.1'", input({}, { version: '0.0.1' })), true);
    assert.equal(holds("#HEADER_testheader matches 'mock.*'", input({}, { testheader: 'mock-3' })), true);
    assert.equal(holds("#HEADER_testheader matches 'mock.*'", input({}, {})), false, 'a missing header matches nothing');
    assert.equal(holds('#HEADER_uid.hashCode() % 100 < 10', input({}, { uid: 'a' })), false, '97 % 100 = 97');
    assert.equal(holds('#HEADER_uid.hashCode() % 100 < 10', input({}, { uid: 'user-3' })), true, '-836031823 % 100 = -23 in Java');
  });

  test('% keeps the dividend sign, so negative hash codes fall below 10 too', () => {
    // "polygenelubricants".hashCode() = -2147483648; % 100 = -48 in Java.
    assert.equal(holds('#HEADER_uid.hashCode() % 100 == -48', input({}, { uid: 'polygenelubricants' })), true);
    assert.equal(holds('#HEADER_uid.hashCode() % 100 < 10', input({}, { uid: 'polygenelubricants' })), true);
    assert.equal(holds('-7 % 3 == -1', input({})), true);
    assert.equal(holds('7 % -3 == 1', input({})), true);
    assert.equal(holds("#HEADER_uid.hashCode() % 100 == 22", input({}, { uid: 'hello' })), true);
  });

  test('&&, ||, !, parentheses, comparisons and !=', () => {
    const i = input({ USER_NAME: 'alice', PROJECT_NAME: 'p1' }, { tier: 'gold' });
    assert.equal(holds("#USER_NAME == 'alice' && #HEADER_tier == 'gold'", i), true);
    assert.equal(holds("#USER_NAME == 'bob' || #HEADER_tier == 'gold'", i), true);
    assert.equal(holds("!(#USER_NAME == 'bob')", i), true);
    assert.equal(holds("#USER_NAME != 'bob' && !(#PROJECT_NAME matches 'p[0-9]' && #HEADER_tier == 'silver')", i), true);
    assert.equal(holds('3 <= 3 && 4 > 3 && 2 >= 2 && 1 < 2', i), true);
    assert.equal(holds("'it''s' == 'it''s'", i), true, "'' escapes a quote");
    assert.equal(holds("#USER_NAME == 'alice' || #USER_NAME == 'bob' && false", i), true, '&& binds tighter than ||');
  });

  test('a pattern that would backtrack exponentially runs in linear time (a caller\'s header cannot stall the gateway); the others as before', () => {
    // With a backtracking engine, 40 a's take 2^40 steps (hours); the linear engine answers at once.
    const cond = "#HEADER_x matches '(a|a)*b'";
    assert.equal(holds(cond, input({}, { x: 'a'.repeat(40) })), false);
    assert.equal(holds(cond, input({}, { x: 'aaab' })), true);
    // What that engine cannot run still works as before: counts past 16, lookarounds, Unicode classes.
    assert.equal(holds("#HEADER_x matches '[a-z]{3,32}'", input({}, { x: 'gold' })), true);
    assert.equal(holds("#HEADER_x matches '(?=g)[a-z]+'", input({}, { x: 'gold' })), true);
    assert.equal(holds("#USER_NAME matches '\\p{L}+'", input({ USER_NAME: 'été' })), true);
    assert.equal(holds("#USER_NAME matches '\\p{L}+'", input({ USER_NAME: 'p{L}}' })), false);
  });

  test('conditions as long and as deep as allowed evaluate as written', () => {
    const i = input({ USER_NAME: 'alice' }, { a: 'b' });
    const terms = Math.floor(MAX_CONDITION_LENGTH / 7);
    const chain = Array.from({ length: terms }, () => '1 < 2').join('&&');
    assert.ok(chain.length <= MAX_CONDITION_LENGTH);
    assert.equal(holds(chain, i), true);
    assert.equal(holds(chain + '&&1>2', i), false);
    assert.equal(holds(Array.from({ length: terms }, () => '1 > 2').join('||'), i), false);
    assert.equal(holds('('.repeat(MAX_NESTING) + "#HEADER_a == 'b'" + ')'.repeat(MAX_NESTING), i), true);
    assert.equal(holds('!'.repeat(MAX_NESTING) + "#USER_NAME == 'alice'", i), true, 'an even number of ! is the condition itself');
  });

  test('refused conditions say where', () => {
    const cases: [string, RegExp][] = [
      ["#DOMAIN_NAME == ", /unexpected end of condition; expected a variable, a quoted string, an integer or \( at position 17/],
      ["#DOMAIN_NAME = 'x'", /unexpected character '=' at position 14/],
      ["#NOPE == 'x'", /unknown variable #NOPE; expected #HEADER_<name> or one of #DOMAIN_NAME.* at position 1/],
      ["(#USER_NAME == 'a'", /unexpected end of condition; expected '\)' at position 19/],
      ["#USER_NAME == 'a", /unterminated string at position 15/],
      ["#HEADER_uid.length() > 3", /unexpected 'length'; expected 'hashCode' \(the one method conditions may call\) at position 13/],
      ["#USER_NAME matches '('", /invalid regular expression: .* at position 20/],
      ["#USER_NAME == 'a' 'b'", /unexpected ''b''; expected '&&', '\|\|' or the end of the condition at position 19/],
      ['', /the condition is empty at position 1/],
      ['99999999999 > 1', /integer 99999999999 is out of the 32-bit range at position 1/],
      ['!'.repeat(11000) + "#HEADER_a == 'b'", /the condition is 11016 characters long; at most 2048 are allowed at position 2049/],
      ['('.repeat(40) + "#HEADER_a == 'b'" + ')'.repeat(40), /'\(' nests more than 32 deep; write the condition flatter at position 33/],
      ['!'.repeat(33) + 'true', /'!' nests more than 32 deep; write the condition flatter at position 33/],
      ['!('.repeat(20) + 'true' + ')'.repeat(20), /'!' nests more than 32 deep; write the condition flatter at position 33/],
    ];
    for (const [cond, msg] of cases) {
      assert.throws(() => parseCondition(cond), (err: unknown) => err instanceof RuleSyntaxError && msg.test(err.message), cond);
    }
  });
});
