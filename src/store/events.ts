import type { Db } from './db.js';

export type EventLevel = 'Normal' | 'Warning' | 'Abnormal';
export type ResourceType = 'model' | 'service';

export interface EventRecord {
  time: string;
  level: EventLevel;
  message: string;
}

const RETENTION_MS = 30 * 24 * 3600 * 1000;

/** Lifecycle events on models and services (SPEC §3), kept 30 days. */
export class EventLog {
  private readonly insert;
  private readonly list;
  private readonly prune;

  constructor(db: Db) {
    this.insert = db.prepare('INSERT INTO events (resource_type, resource_id, level, message, time) VALUES (?, ?, ?, ?, ?)');
    this.list = db.prepare('SELECT level, message, time FROM events WHERE resource_type = ? AND resource_id = ? ORDER BY id');
    this.prune = db.prepare('DELETE FROM events WHERE time < ?');
  }

  record(type: ResourceType, id: string, level: EventLevel, message: string): void {
    this.insert.run(type, id, level, message, Date.now());
  }

  of(type: ResourceType, id: string): EventRecord[] {
    return (this.list.all(type, id) as { level: EventLevel; message: string; time: number }[]).map((e) => ({
      time: new Date(e.time).toISOString(),
      level: e.level,
      message: e.message,
    }));
  }

  pruneOld(now = Date.now()): void {
    this.prune.run(now - RETENTION_MS);
  }
}
