// Starts `mapsync lsp` for .map files. The command comes from the setting mapsync.server.command.
const vscode = require("vscode");
const { LanguageClient } = require("vscode-languageclient/node");

let client;

function activate(context) {
  const [command, ...args] = vscode.workspace.getConfiguration("mapsync").get("server.command");
  client = new LanguageClient(
    "mapsync",
    "mapsync language server",
    { command, args },
    {
      documentSelector: [{ scheme: "file", language: "mapsync" }],
      synchronize: { fileEvents: vscode.workspace.createFileSystemWatcher("**/*.map") },
    },
  );
  context.subscriptions.push(client);
  return client.start();
}

function deactivate() {
  return client ? client.stop() : undefined;
}

module.exports = { activate, deactivate };
