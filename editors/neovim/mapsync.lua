-- mapsync: .map files get the filetype "mapsync" and the mapsync language server.
vim.filetype.add({ extension = { map = "mapsync" } })

vim.api.nvim_create_autocmd("FileType", {
  pattern = "mapsync",
  callback = function(args)
    vim.lsp.start({
      name = "mapsync",
      cmd = { "mapsync", "lsp" },
      root_dir = vim.fs.root(args.buf, { "mapsync.yaml", ".git" }) or vim.fn.getcwd(),
    })
  end,
})
