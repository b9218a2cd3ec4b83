"""The replica's run APIs: native (`/v1/flows/{name}/run`), LangFlow's (`/api/v1/...`) and OpenAI's
(`/v1/chat/completions`, `/v1/responses`, `/v1/models`), each a thin translation onto worker.runs."""
