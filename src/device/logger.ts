/** The logging surface the device uses; a pino logger satisfies it. Never pass key material. */
export interface Logger {
  error(obj: object | string, msg?: string): void;
  warn(obj: object | string, msg?: string): void;
  info(obj: object | string, msg?: string): void;
  debug(obj: object | string, msg?: string): void;
}

const noop = (): void => {};
export const silentLogger: Logger = { error: noop, warn: noop, info: noop, debug: noop };
