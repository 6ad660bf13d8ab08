import type { Client, ClientOptions } from "openapi-fetch";
import type { paths } from "./schema.js";

export type { components, operations, paths } from "./schema.js";

/** Where the service is and the API key to send as `Authorization: Bearer …`. */
export interface DocnumOptions extends ClientOptions {
  baseUrl: string;
  apiKey: string;
}

/** `GET`, `POST`, `PATCH`, `DELETE` over the service's paths, typed by its OpenAPI document. */
export type DocnumClient = Client<paths>;

export function createDocnumClient(options: DocnumOptions): DocnumClient;
