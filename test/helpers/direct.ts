import path from 'node:path';
import ort from 'onnxruntime-node';
import { mulberry32 } from '../../scripts/prng.js';
import { SAMPLE_MODELS } from './gateway.js';

/** Runs a sample package's model in-process, the reference every gateway answer is compared with. */
const sessions = new Map<string, Promise<ort.InferenceSession>>();

export function session(model: string): Promise<ort.InferenceSession> {
  let s = sessions.get(model);
  if (!s) sessions.set(model, (s = ort.InferenceSession.create(path.join(SAMPLE_MODELS, model, 'model.onnx'))));
  return s;
}

export async function runDirect(model: string, feeds: Record<string, ort.Tensor>): Promise<Record<string, ort.Tensor>> {
  return (await session(model)).run(feeds);
}

/** Rows of an output tensor as plain arrays (strings or numbers as float64 of the float32 values). */
export function rows(t: ort.Tensor): unknown[][] {
  const n = t.dims[0]!;
  const size = t.dims.slice(1).reduce((a, b) => a * b, 1);
  const data = Array.from(t.data as ArrayLike<unknown>);
  return Array.from({ length: n }, (_, r) => data.slice(r * size, (r + 1) * size));
}

export const IRIS_FEATURES = ['sepal_length', 'sepal_width', 'petal_length', 'petal_width'] as const;

export const WML_FIELDS = ['CheckingStatus', 'LoanDuration', 'CreditHistory', 'LoanPurpose', 'LoanAmount', 'ExistingSavings', 'EmploymentDuration', 'InstallmentPercent', 'Sex', 'OthersOnLoan', 'CurrentResidenceDuration', 'OwnsProperty', 'Age', 'InstallmentPlans', 'Housing', 'ExistingCreditsCount', 'Job', 'Dependents', 'Telephone', 'ForeignWorker'];

export const WML_VALUES: (string | number)[][] = [
  ['no_checking', 13, 'credits_paid_to_date', 'car_new', 1343, '100_to_500', '1_to_4', 2, 'female', 'none', 3, 'savings_insurance', 46, 'none', 'own', 2, 'skilled', 1, 'none', 'yes'],
  ['no_checking', 24, 'prior_payments_delayed', 'furniture', 4567, '500_to_1000', '1_to_4', 4, 'male', 'none', 4, 'savings_insurance', 36, 'none', 'free', 2, 'management_self-employed', 1, 'none', 'yes'],
  ['less_0', 48, 'outstanding_credit', 'business', 9000, 'less_100', 'less_1', 4, 'male', 'co-applicant', 1, 'unknown', 23, 'stores', 'rent', 3, 'unskilled', 2, 'yes', 'no'],
];

export function creditRiskFeeds(values: (string | number)[][]): Record<string, ort.Tensor> {
  const feeds: Record<string, ort.Tensor> = {};
  WML_FIELDS.forEach((f, c) => {
    const col = values.map((row) => row[c]!);
    feeds[f] = typeof col[0] === 'string'
      ? new ort.Tensor('string', col as string[], [values.length, 1])
      : new ort.Tensor('float32', Float32Array.from(col as number[]), [values.length, 1]);
  });
  return feeds;
}

/** Deterministic pseudo-random numbers, so failures reproduce. */
export const prng = mulberry32;

/** A ccfraud row: 29 float32-representable numbers in [-2, 2]. */
export function fraudRow(rand: () => number): number[] {
  return Array.from({ length: 29 }, () => Math.fround(rand() * 4 - 2));
}
