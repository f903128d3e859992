"""The bank and its stores: templates as stored, their variants, the prepared matchers kept between calls.

Below the frame path, above the engine: it raises the project's own errors
(``featuremap.service.errors``) and never imports the RPC library.
"""
