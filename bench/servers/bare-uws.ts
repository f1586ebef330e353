// Bare uWebSockets.js server: the ceiling of the ONNX-path benchmark (SPEC §14). It reads the
// whole POST body and answers a constant pandas-records-shaped JSON; it parses nothing and runs
// nothing (see constant.ts).
//
// Usage: node dist/bench/servers/bare-uws.js <port>   (or PORT=<port>)
import { portArg, serveConstant } from './constant.js';

serveConstant({ name: 'bare-uws', port: portArg('bare-uws', 9001), contentType: 'application/json', answer: Buffer.from('[{"out":{"dense_1":[0.5]}}]') });
