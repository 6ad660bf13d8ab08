// The Docnum client: openapi-fetch typed by src/schema.d.ts, which openapi-typescript generates
// from the service's OpenAPI document (`npm run generate`). Every path, parameter, body and
// answer is typed from that document, so a call the service does not accept fails to compile.
import createClient from "openapi-fetch";

/**
 * @param {import("./index.js").DocnumOptions} options
 * @returns {import("./index.js").DocnumClient}
 */
export function createDocnumClient({ baseUrl, apiKey, headers, ...rest }) {
  return createClient({
    baseUrl,
    headers: { ...headers, Authorization: `Bearer ${apiKey}` },
    ...rest,
  });
}
