# CPU image: production dependencies only. For CUDA, start FROM an nvidia/cuda 12 cudnn runtime
# image with Node 20 and run `npm rebuild onnxruntime-node --onnxruntime-node-install=cuda12`.
FROM node:20-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json .npmrc tsconfig.json ./
RUN npm ci
COPY src ./src
COPY scripts ./scripts
COPY test ./test
COPY bench ./bench
RUN npx tsc -p tsconfig.json

FROM node:20-bookworm-slim
# tini as PID 1: it reaps processes orphaned in the container (what an image model's server or a
# health command leaves behind) and passes SIGTERM on to the gateway.
RUN apt-get update && apt-get install -y --no-install-recommends tini && rm -rf /var/lib/apt/lists/*
ENV NODE_ENV=production INFERGATE_HOST=0.0.0.0 INFERGATE_PORT=8080 INFERGATE_DATA_DIR=/data INFERGATE_MODELS_DIR=/app/models
WORKDIR /app
COPY package.json package-lock.json .npmrc ./
RUN npm ci --omit=dev && npm cache clean --force
COPY --from=build /app/dist/src ./dist/src
COPY models ./models
RUN mkdir -p /data && chown node:node /data
VOLUME /data
EXPOSE 8080
USER node
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["node", "dist/src/cli/main.js", "serve"]
