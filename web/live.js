// LoRA Cloud: the api and the stores of this page, bound to ComfyUI's api (its fetchApi and
// apiURL, and its websocket events). Building them sends nothing: stores fetch when asked and
// listen once lora_cloud.js's setup() calls listenAll. ComfyUI imports every .js file here.
import { api } from "../../scripts/api.js";
import { createApi } from "./api.js";
import { createStores } from "./stores.js";

export const loraCloudApi = createApi(api);
export const stores = createStores(loraCloudApi);
